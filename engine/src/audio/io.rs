//! Reading audio files into [`Audio`] and writing WAV files.

use super::{Audio, AudioError, SUPPORTED_RATES};
use std::path::Path;

/// Sample format of a written WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavFormat {
    Int16,
    Int24,
    Float32,
}

/// Reads a WAV (8/16/24/32-bit integer or 32-bit float), FLAC, OGG/Vorbis or MP3 file.
///
/// Every error names the file. Files with NaN or infinite samples, no frames, or a sample
/// rate outside 8-192 kHz are rejected rather than passed on.
pub fn read_audio(path: &Path) -> Result<Audio, AudioError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if !path.exists() {
        return Err(AudioError::file(path, "file not found"));
    }
    let audio = match ext.as_str() {
        "wav" | "wave" => read_wav(path)?,
        "flac" | "ogg" | "oga" | "mp3" => read_compressed(path)?,
        other => {
            return Err(AudioError::file(
                path,
                format!("unsupported audio format '.{other}' (use WAV, FLAC, OGG or MP3)"),
            ))
        }
    };
    if audio.num_frames() == 0 {
        return Err(AudioError::file(path, "the file contains no audio frames"));
    }
    if !SUPPORTED_RATES.contains(&audio.sample_rate) {
        return Err(AudioError::file(
            path,
            format!(
                "sample rate {} Hz is outside the supported 8-192 kHz",
                audio.sample_rate
            ),
        ));
    }
    if let Some((c, frame)) = audio.first_non_finite() {
        return Err(AudioError::file(
            path,
            format!("NaN or infinite sample at frame {frame} of channel {c}"),
        ));
    }
    Ok(audio)
}

fn read_wav(path: &Path) -> Result<Audio, AudioError> {
    let reader = hound::WavReader::open(path)
        .map_err(|e| AudioError::file(path, format!("not a readable WAV file ({e})")))?;
    let spec = reader.spec();
    let n_ch = spec.channels as usize;
    if n_ch == 0 {
        return Err(AudioError::file(path, "WAV header declares zero channels"));
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| AudioError::file(path, format!("corrupt WAV data ({e})")))?,
        (hound::SampleFormat::Int, bits @ 8..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| (v as f64 * scale) as f32))
                .collect::<Result<_, _>>()
                .map_err(|e| AudioError::file(path, format!("corrupt WAV data ({e})")))?
        }
        (fmt, bits) => {
            return Err(AudioError::file(
                path,
                format!("unsupported WAV sample format {fmt:?} with {bits} bits"),
            ))
        }
    };
    Ok(Audio {
        sample_rate: spec.sample_rate,
        channels: deinterleave(&interleaved, n_ch),
    })
}

fn deinterleave(interleaved: &[f32], n_ch: usize) -> Vec<Vec<f32>> {
    let frames = interleaved.len() / n_ch;
    (0..n_ch)
        .map(|c| (0..frames).map(|f| interleaved[f * n_ch + c]).collect())
        .collect()
}

fn read_compressed(path: &Path) -> Result<Audio, AudioError> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
    use symphonia::core::errors::Error as SymErr;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    let file = std::fs::File::open(path)
        .map_err(|e| AudioError::file(path, format!("cannot open ({e})")))?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| AudioError::file(path, format!("not a readable audio file ({e})")))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AudioError::file(path, "no audio track"))?;
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| AudioError::file(path, format!("unsupported codec ({e})")))?;
    let mut sample_rate = track.codec_params.sample_rate;
    let mut channels: Vec<Vec<f32>> = Vec::new();
    let mut buf: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymErr::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymErr::ResetRequired) => break,
            Err(e) => return Err(AudioError::file(path, format!("corrupt stream ({e})"))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged packet: skip it as players do, the rest of the file is still usable.
            Err(SymErr::DecodeError(_)) => continue,
            Err(e) => return Err(AudioError::file(path, format!("decode failed ({e})"))),
        };
        let spec = *decoded.spec();
        sample_rate = Some(spec.rate);
        let n_ch = spec.channels.count();
        if channels.is_empty() {
            channels = vec![Vec::new(); n_ch];
        }
        let sb = buf.get_or_insert_with(|| SampleBuffer::new(decoded.capacity() as u64, spec));
        if sb.capacity() < decoded.capacity() {
            *sb = SampleBuffer::new(decoded.capacity() as u64, spec);
        }
        sb.copy_interleaved_ref(decoded);
        for frame in sb.samples().chunks_exact(n_ch) {
            for (c, s) in frame.iter().enumerate() {
                channels[c].push(*s);
            }
        }
    }
    let sample_rate =
        sample_rate.ok_or_else(|| AudioError::file(path, "stream has no sample rate"))?;
    if channels.is_empty() {
        return Err(AudioError::file(path, "the file contains no audio frames"));
    }
    Ok(Audio {
        sample_rate,
        channels,
    })
}

/// Writes `audio` as a WAV file. Integer formats clip at full scale; float keeps overs.
pub fn write_wav(path: &Path, audio: &Audio, format: WavFormat) -> Result<(), AudioError> {
    let (bits, sample_format) = match format {
        WavFormat::Int16 => (16, hound::SampleFormat::Int),
        WavFormat::Int24 => (24, hound::SampleFormat::Int),
        WavFormat::Float32 => (32, hound::SampleFormat::Float),
    };
    let spec = hound::WavSpec {
        channels: audio.num_channels() as u16,
        sample_rate: audio.sample_rate,
        bits_per_sample: bits,
        sample_format,
    };
    let err = |e: hound::Error| AudioError::file(path, format!("cannot write WAV ({e})"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| AudioError::file(path, format!("cannot create folder ({e})")))?;
    }
    let mut writer = hound::WavWriter::create(path, spec).map_err(err)?;
    let full_scale = ((1i64 << (bits - 1)) - 1) as f32;
    for f in 0..audio.num_frames() {
        for ch in &audio.channels {
            let s = ch[f];
            match format {
                WavFormat::Float32 => writer.write_sample(s).map_err(err)?,
                _ => writer
                    .write_sample((s.clamp(-1.0, 1.0) * full_scale).round() as i32)
                    .map_err(err)?,
            }
        }
    }
    writer.finalize().map_err(err)
}

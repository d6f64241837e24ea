//! Sample-rate conversion with rubato's FFT resampler (exact rational ratios, so 44.1 kHz
//! <-> 32 kHz and 48 kHz <-> 32 kHz are synchronous and alignment is sample exact).

use super::{Audio, AudioError, SUPPORTED_RATES};
use rubato::{FftFixedIn, Resampler};

const CHUNK: usize = 1024;

/// Converts `audio` to `rate`. The output has `ceil(len * rate / in_rate)` frames and is time
/// aligned with the input: the resampler's delay is removed and its tail flushed.
pub fn resample(audio: &Audio, rate: u32) -> Result<Audio, AudioError> {
    if !SUPPORTED_RATES.contains(&rate) || !SUPPORTED_RATES.contains(&audio.sample_rate) {
        return Err(AudioError::Data(format!(
            "cannot resample {} Hz -> {rate} Hz: rates must be within 8-192 kHz",
            audio.sample_rate
        )));
    }
    if rate == audio.sample_rate {
        return Ok(audio.clone());
    }
    let n_ch = audio.num_channels();
    let in_len = audio.num_frames();
    let out_len = (in_len as u64 * rate as u64).div_ceil(audio.sample_rate as u64) as usize;
    let mut rs = FftFixedIn::<f32>::new(audio.sample_rate as usize, rate as usize, CHUNK, 2, n_ch)
        .map_err(|e| AudioError::Data(format!("resampler: {e}")))?;
    let delay = rs.output_delay();
    let mut out: Vec<Vec<f32>> = vec![Vec::with_capacity(out_len + delay + 2 * CHUNK); n_ch];
    let mut pos = 0;
    let mut chunk: Vec<Vec<f32>> = vec![vec![0.0; CHUNK]; n_ch];
    // Feed the input, then zeros until the delayed tail has come out.
    while out[0].len() < out_len + delay {
        let need = rs.input_frames_next();
        for (c, buf) in chunk.iter_mut().enumerate() {
            buf.resize(need, 0.0);
            let start = pos.min(in_len);
            let avail = (in_len - start).min(need);
            buf[..avail].copy_from_slice(&audio.channels[c][start..start + avail]);
            buf[avail..].fill(0.0);
        }
        pos += need;
        let produced = rs
            .process(&chunk, None)
            .map_err(|e| AudioError::Data(format!("resampler: {e}")))?;
        for (o, p) in out.iter_mut().zip(produced) {
            o.extend_from_slice(&p);
        }
    }
    let channels = out
        .into_iter()
        .map(|ch| ch[delay..delay + out_len].to_vec())
        .collect();
    Ok(Audio {
        sample_rate: rate,
        channels,
    })
}

//! Parity of the candle EnCodec with Hugging Face transformers' `EncodecModel`, on fixtures
//! written by `xtask/fixtures/make_encodec_fixtures.py` (MusicGen's 32 kHz architecture at
//! reduced width, seeded random weights), plus its handling of broken weights and configs.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use stemgen::audio::Audio;
use stemgen::codec::encodec::{Encodec, EncodecConfig};
use stemgen::codec::{no_progress, Tokenizer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/encodec")
        .join(name)
}

fn config() -> EncodecConfig {
    EncodecConfig::from_json(&std::fs::read_to_string(fixture("config.json")).unwrap()).unwrap()
}

fn model() -> Encodec {
    Encodec::load(&fixture("model.safetensors"), config(), &Device::Cpu).unwrap()
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("expected.safetensors"), &Device::Cpu).unwrap()
}

fn vec_f32(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn codes_of(t: &Tensor) -> Vec<Vec<u32>> {
    // [1, Q, T] int64 -> [Q][T]
    let t = t.squeeze(0).unwrap().to_dtype(DType::U32).unwrap();
    t.to_vec2().unwrap()
}

/// Max absolute difference relative to the reference's peak.
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let peak = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / peak
}

#[test]
fn codes_match_exactly_and_audio_within_1e4_of_the_reference() {
    let m = model();
    let exp = expected();
    for i in 0..2 {
        let input = vec_f32(&exp[&format!("input_{i}")]);
        let emb = vec_f32(&m.embed(&input).unwrap());
        let err = rel_err(&emb, &vec_f32(&exp[&format!("embeddings_{i}")]));
        assert!(err < 1e-4, "clip {i}: encoder latent error {err}");

        let want_codes = codes_of(&exp[&format!("codes_{i}")]);
        assert_eq!(
            m.encode_samples(&input).unwrap(),
            want_codes,
            "clip {i}: codes differ"
        );

        let audio = m.decode_codes(&want_codes).unwrap();
        let err = rel_err(&audio, &vec_f32(&exp[&format!("decoded_{i}")]));
        assert!(err < 1e-4, "clip {i}: decoded audio error {err}");

        let audio2 = m.decode_codes(&want_codes[..2]).unwrap();
        let err = rel_err(&audio2, &vec_f32(&exp[&format!("decoded_2q_{i}")]));
        assert!(err < 1e-4, "clip {i}: 2-level decode error {err}");
    }
}

fn save(tensors: &HashMap<String, Tensor>, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    candle_core::safetensors::save(tensors, &p).unwrap();
    p
}

fn fixture_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("model.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn accepts_musicgen_prefix_and_old_weight_norm_names() {
    let dir = tempfile::tempdir().unwrap();
    let renamed: HashMap<String, Tensor> = fixture_tensors()
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .replace("parametrizations.weight.original0", "weight_g")
                .replace("parametrizations.weight.original1", "weight_v");
            (format!("audio_encoder.{k}"), v)
        })
        .collect();
    let p = save(&renamed, dir.path(), "musicgen.safetensors");
    let m = Encodec::load(&p, config(), &Device::Cpu).unwrap();
    let exp = expected();
    let input = vec_f32(&exp["input_0"]);
    assert_eq!(m.encode_samples(&input).unwrap(), codes_of(&exp["codes_0"]));
}

#[test]
fn tokenizer_interface_takes_any_rate_and_channels() {
    let m = model();
    assert_eq!(
        (
            m.sample_rate(),
            m.frame_rate(),
            m.num_levels(),
            m.codebook_size()
        ),
        (32_000, 50.0, 4, 256)
    );
    let n = 44_100; // 1 s of stereo at 44.1 kHz -> 32_000 samples -> 50 frames
    let ch: Vec<f32> = (0..n).map(|i| 0.2 * (i as f32 * 0.05).sin()).collect();
    let audio = Audio::new(44_100, vec![ch.clone(), ch]).unwrap();
    let tokens = m.encode(&audio, &mut no_progress()).unwrap();
    assert_eq!((tokens.levels, tokens.frames), (4, 50));
    let back = m.decode(&tokens, &mut no_progress()).unwrap();
    assert_eq!((back.sample_rate, back.num_frames()), (32_000, 50 * 640));
    let coarse = m.decode(&tokens.truncated(1), &mut no_progress()).unwrap();
    assert_eq!(coarse.num_frames(), 50 * 640);

    let mut bad = tokens.clone();
    bad.codes[3] = 256;
    assert!(m
        .decode(&bad, &mut no_progress())
        .unwrap_err()
        .to_string()
        .contains("out of range"));
    let nan = Audio::mono(32_000, vec![f32::NAN; 1000]).unwrap();
    assert!(m
        .encode(&nan, &mut no_progress())
        .unwrap_err()
        .to_string()
        .contains("NaN"));
}

#[test]
fn long_audio_is_windowed_with_progress_and_stays_close_to_one_pass() {
    let m = model();
    let n: usize = 32_000 * 40 + 123; // 40 s: more than one 30 s window
    let x: Vec<f32> = (0..n)
        .map(|i| 0.1 * ((i as f32 * 0.013).sin() + (i as f32 * 0.0021).sin()))
        .collect();
    let mut reports = Vec::new();
    let tokens = m
        .encode(&Audio::mono(32_000, x.clone()).unwrap(), &mut |d, t| {
            reports.push((d, t))
        })
        .unwrap();
    assert_eq!(reports, vec![(1, 2), (2, 2)]);
    assert_eq!(tokens.frames, n.div_ceil(640));
    let one_pass = m.encode_samples(&x).unwrap();
    let same = (0..tokens.frames)
        .filter(|&f| tokens.level(0)[f] == one_pass[0][f])
        .count();
    assert!(
        same as f64 >= 0.99 * tokens.frames as f64,
        "{same}/{} level-0 codes agree",
        tokens.frames
    );
    let audio = m.decode(&tokens, &mut no_progress()).unwrap();
    assert_eq!(audio.num_frames(), tokens.frames * 640);
}

fn load_err(p: &Path, cfg: EncodecConfig) -> String {
    match Encodec::load(p, cfg, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", p.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn broken_weights_and_mismatched_configs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("model.safetensors")).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&truncated, config());
    assert!(
        e.contains("truncated.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\x10\0\0\0\0\0\0\0{not json at all").unwrap();
    assert!(load_err(&garbage, config()).contains("garbage.safetensors"));

    let missing = dir.path().join("nope.safetensors");
    assert!(load_err(&missing, config()).contains("cannot read"));

    let mut t = fixture_tensors();
    t.remove("decoder.layers.1.lstm.weight_hh_l1");
    let p = save(&t, dir.path(), "missing.safetensors");
    let e = load_err(&p, config());
    assert!(
        e.contains("missing.safetensors") && e.contains("decoder.layers.1.lstm.weight_hh_l1"),
        "{e}"
    );

    let mut t = fixture_tensors();
    t.insert(
        "encoder.layers.0.conv.bias".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let p = save(&t, dir.path(), "misshaped.safetensors");
    let e = load_err(&p, config());
    assert!(
        e.contains("encoder.layers.0.conv.bias") && e.contains("[3]"),
        "{e}"
    );

    let mut wide = config();
    wide.num_filters = 16;
    let e = load_err(&fixture("model.safetensors"), wide);
    assert!(e.contains("do not match"), "{e}");

    let mut t = fixture_tensors();
    t.insert(
        "quantizer.layers.2.codebook.embed".into(),
        Tensor::full(f32::NAN, (256, 32), &Device::Cpu).unwrap(),
    );
    let p = save(&t, dir.path(), "nan.safetensors");
    assert!(load_err(&p, config()).contains("NaN"));

    let mut stereo = config();
    stereo.audio_channels = 2;
    assert!(load_err(&fixture("model.safetensors"), stereo).contains("mono"));
}

#[test]
fn musicgen_config_json_is_read_from_its_audio_encoder_section() {
    let hf = r#"{"model_type":"musicgen","audio_encoder":{"sampling_rate":32000,"num_filters":64,
        "upsampling_ratios":[8,5,4,4],"codebook_size":2048,"hidden_size":128,"target_bandwidths":[2.2],
        "pad_mode":"reflect","use_causal_conv":false,"num_lstm_layers":2}}"#;
    let cfg = EncodecConfig::from_json(hf).unwrap();
    assert_eq!(cfg, EncodecConfig::encodec_32khz());
    assert_eq!(cfg.num_quantizers(), 4);
    assert_eq!(cfg.frame_rate(), 50.0);
}

#[test]
fn cpu_kernels_and_candle_ops_agree() {
    use stemgen::codec::encodec::Backend;
    let mut m = model();
    let exp = expected();
    let input = vec_f32(&exp["input_0"]);
    let fast = m.encode_samples(&input).unwrap();
    let fast_audio = m.decode_codes(&fast).unwrap();
    m.set_backend(Backend::Candle).unwrap();
    assert_eq!(m.encode_samples(&input).unwrap(), fast);
    let err = rel_err(&m.decode_codes(&fast).unwrap(), &fast_audio);
    assert!(err < 1e-4, "backends differ by {err}");
}

/// The fixture is reduced width, so the full 32 kHz architecture's own code paths (the
/// two-thread 1024-unit LSTM, im2col and tiling at every layer's geometry) are checked against
/// candle's tensor ops on the full configuration with seeded random weights.
#[test]
fn cpu_kernels_match_candle_ops_at_full_width() {
    use stemgen::codec::encodec::{random_weights, Backend};
    let cfg = EncodecConfig::encodec_32khz();
    let weights = random_weights(&cfg, 3, &Device::Cpu).unwrap();
    let mut m = Encodec::from_tensors(weights, cfg, &Device::Cpu).unwrap();
    let input: Vec<f32> = (0..16_000)
        .map(|i| 0.3 * (i as f32 * 0.05).sin() + 0.1 * (i as f32 * 0.0013).cos())
        .collect();
    let fast_latent = vec_f32(&m.embed(&input).unwrap());
    let codes = m.encode_samples(&input).unwrap();
    let fast_audio = m.decode_codes(&codes).unwrap();
    // Later passes run on the layer buffers and per-thread scratch that earlier passes left
    // behind, stale contents included: they must give the same result.
    assert_eq!(vec_f32(&m.embed(&input).unwrap()), fast_latent);
    assert_eq!(m.decode_codes(&codes).unwrap(), fast_audio);
    m.set_backend(Backend::Candle).unwrap();
    let err = rel_err(&fast_latent, &vec_f32(&m.embed(&input).unwrap()));
    assert!(err < 1e-4, "encoder latents differ by {err}");
    let err = rel_err(&fast_audio, &m.decode_codes(&codes).unwrap());
    assert!(err < 1e-4, "decoded audio differs by {err}");
}

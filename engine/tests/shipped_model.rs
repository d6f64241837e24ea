//! The shipped default model (`assets/default`) on the shipped example context: it loads,
//! generates the README's 4 bars at the context's rate and length, and behaves like the
//! instrument it is asked for (a bass line puts most of its energy low, far more than the
//! drums/piano/strings context does) on at least 3 of 4 seeds: a sampled stem is a draw, and
//! the shipped model puts a draft bass an octave or two too high now and then (model card).

use std::path::Path;
use std::sync::atomic::AtomicBool;

use stemgen::analysis::stft::Stft;
use stemgen::audio::{read_audio, Audio};
use stemgen::generate::{CategoryChoice, ContextSource, GenerateRequest, Generator, Length};
use stemgen::sample::Preset;

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Share of the spectral energy below `hz` (mono, 32 kHz analysis).
fn low_share(audio: &Audio, hz: f64) -> f64 {
    let mono = audio.to_mono_at(32_000).unwrap();
    let stft = Stft::new(2048, 640);
    let (spec, _) = stft.forward(&mono.channels[0]);
    let bins = stft.bins();
    let cut = (hz / (32_000.0 / 2048.0)) as usize;
    let (mut low, mut all) = (0.0f64, 0.0f64);
    for (i, c) in spec.iter().enumerate() {
        let p = c.norm_sqr() as f64;
        all += p;
        if i % bins <= cut {
            low += p;
        }
    }
    low / all.max(1e-30)
}

/// The README's job at the draft preset with `seed`.
fn readme_bass(generator: &Generator, context: &Audio, seed: u64) -> Audio {
    let mut req = GenerateRequest::new(
        ContextSource::Audio(context.clone()),
        CategoryChoice::Name("bass".into()),
        generator.settings(Preset::Draft).with_seed(seed),
    );
    req.output_rate = context.sample_rate;
    req.output_channels = context.num_channels();
    req.length = Some(Length::Bars {
        bars: 4.0,
        bpm: 123.0,
        beats_per_bar: 4,
    });
    generator
        .generate(&req, &mut |_| {}, &AtomicBool::new(false))
        .unwrap()
        .audio
}

#[test]
fn shipped_model_generates_a_bass_line_for_the_example() {
    let generator = Generator::load(&repo("assets/default")).expect("assets/default loads");
    let context = read_audio(&repo("assets/examples/song50-no-bass.wav")).unwrap();
    let context_low = low_share(&context, 250.0);
    let real_bass = read_audio(&repo("assets/examples/song50-bass.wav")).unwrap();
    println!(
        "energy below 250 Hz: real bass {:.2}, context {context_low:.2}",
        low_share(&real_bass, 250.0)
    );
    let mut low_stems = 0;
    for seed in 1..=4 {
        let audio = readme_bass(&generator, &context, seed);
        assert_eq!(audio.sample_rate, context.sample_rate);
        let want = (4.0 * 4.0 * 60.0 / 123.0 * context.sample_rate as f64).round() as usize;
        assert!(
            audio.num_frames().abs_diff(want) <= context.sample_rate as usize / 50,
            "{} frames, expected about {want}",
            audio.num_frames()
        );
        assert!(audio.channels.iter().flatten().all(|v| v.is_finite()));
        let rms = stemgen::audio::rms_dbfs(&audio.channels);
        assert!(
            rms > -45.0,
            "seed {seed}: the stem is (nearly) silent: {rms:.1} dBFS"
        );
        let stem_low = low_share(&audio, 250.0);
        println!("seed {seed}: generated bass {stem_low:.2} below 250 Hz, {rms:.1} dBFS");
        if stem_low > 0.5 && stem_low > context_low + 0.2 {
            low_stems += 1;
        }
    }
    assert!(
        low_stems >= 3,
        "only {low_stems} of 4 bass stems put most of their energy below 250 Hz (context \
         {context_low:.2})"
    );
}

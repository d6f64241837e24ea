//! Training pairs and the token cache (ARCHITECTURE §3.1): tiny datasets of pure-tone stems, so the
//! context's spectrum shows exactly which stems were mixed into it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use rand::rngs::StdRng;
use rand::SeedableRng;
use stemgen::audio::{write_wav, Audio, WavFormat};
use stemgen::codec::encodec::Encodec;
use stemgen::codec::Tokenizer;
use stemgen::data::cache::{write_shard, CacheConfig, ShardSpec, TokenCache};
use stemgen::data::pairs::{draw_pair, list_song_dirs, load_song, load_songs, Pair, PairConfig};
use stemgen::data::Category;

const SR: u32 = 32_000;

/// A distinct tone per stem, each a whole number of cycles per 1/10 s.
fn tone_of(category: Category) -> f32 {
    match category {
        Category::Bass => 200.0,
        Category::Piano => 500.0,
        Category::Guitar => 800.0,
        Category::Strings => 1100.0,
        Category::Drums => 1400.0,
        Category::Organ => 1700.0,
        _ => 2000.0,
    }
}

fn tone(freq: f32, secs: f32, amp: f32) -> Vec<f32> {
    let n = (secs * SR as f32) as usize;
    (0..n)
        .map(|i| amp * (2.0 * std::f32::consts::PI * freq * i as f32 / SR as f32).sin())
        .collect()
}

fn write_stem(dir: &Path, name: &str, samples: Vec<f32>) {
    std::fs::create_dir_all(dir).unwrap();
    let audio = Audio::mono(SR, samples).unwrap();
    write_wav(&dir.join(format!("{name}.wav")), &audio, WavFormat::Float32).unwrap();
}

/// A song whose stems are pure tones; `strings` only plays in the second half and `organ` is
/// silent throughout, `kazoo` is not a category.
fn write_song(dir: &Path, secs: f32) {
    for (name, c) in [
        ("bass", Category::Bass),
        ("piano", Category::Piano),
        ("Guitar", Category::Guitar),
        ("drums", Category::Drums),
    ] {
        write_stem(dir, name, tone(tone_of(c), secs, 0.2));
    }
    let mut strings = tone(tone_of(Category::Strings), secs, 0.2);
    let half = strings.len() / 2;
    strings[..half].iter_mut().for_each(|x| *x = 0.0);
    write_stem(dir, "strings", strings);
    write_stem(dir, "organ", vec![0.0; (secs * SR as f32) as usize]);
    write_stem(dir, "kazoo", tone(2500.0, secs, 0.2));
    std::fs::write(dir.join("metadata.json"), "{}").unwrap();
}

fn dataset(songs: usize, secs: f32) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for i in 0..songs {
        write_song(&root.path().join(format!("song-{i:05}")), secs);
    }
    root
}

fn config(crop: f64) -> PairConfig {
    PairConfig {
        crop_seconds: crop,
        sample_rate: SR,
        ..PairConfig::default()
    }
}

/// Amplitude of the `freq` component (a single-bin DFT, normalised to a sine's amplitude).
fn amplitude(samples: &[f32], freq: f32) -> f32 {
    let (mut re, mut im) = (0.0f64, 0.0f64);
    for (i, &x) in samples.iter().enumerate() {
        let ph = 2.0 * std::f64::consts::PI * freq as f64 * i as f64 / SR as f64;
        re += x as f64 * ph.cos();
        im += x as f64 * ph.sin();
    }
    (2.0 * (re * re + im * im).sqrt() / samples.len() as f64) as f32
}

fn encodec() -> Encodec {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encodec/model.safetensors");
    Encodec::load_with_sidecar_config(&path, &Device::Cpu).unwrap()
}

fn check_pair(pair: &Pair, crop_samples: usize) {
    assert_eq!(pair.context.num_frames(), crop_samples);
    assert_eq!(pair.target.num_frames(), crop_samples);
    assert_eq!(pair.context.num_channels(), 1);
    assert_eq!(pair.context.sample_rate, SR);
    assert!(!pair.context_categories.is_empty(), "empty context");
    assert!(!pair.context_categories.contains(&pair.category));
    assert_ne!(
        pair.category,
        Category::Organ,
        "a silent stem was the target"
    );
    assert!(!pair.context_categories.contains(&Category::Organ));
    let ctx = &pair.context.channels[0];
    let tgt = &pair.target.channels[0];
    let target_amp = amplitude(tgt, tone_of(pair.category));
    assert!(target_amp > 1e-3, "target tone missing: {target_amp}");
    // The target's tone is absent from the context.
    let leak = amplitude(ctx, tone_of(pair.category));
    assert!(
        leak < target_amp * 1e-2 + 1e-5,
        "target leaks into context: {leak} vs {target_amp}"
    );
    // Every context stem is audible in the context (none was silent in this crop) and the
    // stems not chosen are absent.
    for c in [
        Category::Bass,
        Category::Piano,
        Category::Guitar,
        Category::Strings,
        Category::Drums,
    ] {
        let a = amplitude(ctx, tone_of(c));
        if pair.context_categories.contains(&c) {
            // Strings may start mid-crop; it is chosen only when its crop is above silence.
            assert!(a > 1e-3, "{c:?} in context but inaudible ({a})");
        } else if c != pair.category {
            assert!(a < 2e-3, "{c:?} not chosen but present ({a})");
        }
    }
    // One shared gain: bass, piano, guitar, drums all have amplitude 0.2 in the files, so a
    // context stem and the target keep their 1:1 level.
    let ref_ctx = pair
        .context_categories
        .iter()
        .find(|c| **c != Category::Strings)
        .map(|c| amplitude(ctx, tone_of(*c)));
    if let (Some(a), true) = (ref_ctx, pair.category != Category::Strings) {
        assert!(
            (a / target_amp - 1.0).abs() < 0.02,
            "relative level changed: {a} vs {target_amp}"
        );
    }
}

#[test]
fn pairs_exclude_target_skip_silence_and_have_crop_length() {
    let root = dataset(1, 2.0);
    let song = load_song(&root.path().join("song-00000"), SR).unwrap();
    assert_eq!(song.id, "song-00000");
    assert_eq!(song.stems.len(), 6, "bass piano guitar drums strings organ");
    assert_eq!(song.skipped.len(), 1);
    assert!(song.skipped[0].0.ends_with("kazoo.wav"));
    let cfg = config(0.5);
    let mut rng = StdRng::seed_from_u64(7);
    let mut targets = BTreeMap::new();
    let mut context_sizes = BTreeMap::new();
    for _ in 0..40 {
        let pair = draw_pair(&song, &cfg, &mut rng).expect("pair");
        check_pair(&pair, cfg.crop_samples());
        assert!(pair.crop_start + cfg.crop_samples() <= song.len);
        *targets.entry(pair.category).or_insert(0) += 1;
        *context_sizes
            .entry(pair.context_categories.len())
            .or_insert(0) += 1;
    }
    assert!(targets.len() >= 4, "targets vary: {targets:?}");
    assert!(
        context_sizes.len() >= 2,
        "context sizes vary: {context_sizes:?}"
    );
}

#[test]
fn max_context_stems_and_loudness() {
    let root = dataset(1, 1.0);
    let song = load_song(&root.path().join("song-00000"), SR).unwrap();
    let cfg = PairConfig {
        max_context_stems: 1,
        ..config(0.3)
    };
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..10 {
        let pair = draw_pair(&song, &cfg, &mut rng).unwrap();
        assert_eq!(pair.context_categories.len(), 1);
        let rms = stemgen::audio::rms_dbfs(&pair.context.channels);
        assert!(
            (rms - cfg.target_rms_dbfs).abs() < 0.5,
            "context at {rms} dBFS"
        );
    }
}

#[test]
fn short_songs_are_padded_and_silent_songs_give_none() {
    let root = dataset(1, 0.4);
    let song = load_song(&root.path().join("song-00000"), SR).unwrap();
    let cfg = config(1.0);
    let pair = draw_pair(&song, &cfg, &mut StdRng::seed_from_u64(3)).unwrap();
    assert_eq!(pair.crop_start, 0);
    assert_eq!(pair.target.num_frames(), SR as usize);
    let tail = &pair.target.channels[0][(0.5 * SR as f32) as usize..];
    assert!(tail.iter().all(|&x| x == 0.0), "padding is silence");

    // Only one audible stem: no pair can be made.
    let lonely = tempfile::tempdir().unwrap();
    let dir = lonely.path().join("solo");
    write_stem(&dir, "bass", tone(200.0, 1.0, 0.2));
    write_stem(&dir, "piano", vec![0.0; SR as usize]);
    let song = load_song(&dir, SR).unwrap();
    assert!(draw_pair(&song, &config(0.5), &mut StdRng::seed_from_u64(0)).is_none());
}

#[test]
fn pairs_are_deterministic_with_a_seed() {
    let root = dataset(1, 1.5);
    let song = load_song(&root.path().join("song-00000"), SR).unwrap();
    let cfg = config(0.5);
    let draw = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..5)
            .map(|_| draw_pair(&song, &cfg, &mut rng).unwrap())
            .map(|p| {
                (
                    p.crop_start,
                    p.category,
                    p.context_categories,
                    p.context.channels,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(11), draw(11));
    assert_ne!(draw(11), draw(12));
}

#[test]
fn clear_errors_for_empty_and_broken_folders() {
    let empty = tempfile::tempdir().unwrap();
    let err = list_song_dirs(empty.path()).unwrap_err().to_string();
    assert!(err.contains(&empty.path().display().to_string()), "{err}");
    assert!(err.contains("no song folders"), "{err}");

    let missing = empty.path().join("nope");
    let err = format!("{:#}", list_song_dirs(&missing).unwrap_err());
    assert!(err.contains("nope"), "{err}");

    let song_dir = empty.path().join("song-a");
    std::fs::create_dir_all(&song_dir).unwrap();
    std::fs::write(song_dir.join("notes.txt"), "hi").unwrap();
    let err = format!("{:#}", load_songs(empty.path(), SR).unwrap_err());
    assert!(
        err.contains("song-a") && err.contains("no stem files"),
        "{err}"
    );

    std::fs::write(song_dir.join("bass.wav"), b"not a wav file at all").unwrap();
    let err = format!("{:#}", load_song(&song_dir, SR).unwrap_err());
    assert!(err.contains("bass.wav"), "{err}");

    let out = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        write_shard(
            empty.path(),
            &encodec(),
            &CacheConfig::default(),
            ShardSpec::ALL,
            out.path(),
            &mut |_, _| {}
        )
        .unwrap_err()
    );
    assert!(err.contains("song-a"), "{err}");

    let err = format!("{:#}", TokenCache::open(out.path()).unwrap_err());
    assert!(err.contains("no token cache shards"), "{err}");
}

#[test]
fn shard_spec_parses_and_covers_every_song_once() {
    assert_eq!(
        "2/5".parse::<ShardSpec>().unwrap(),
        ShardSpec { index: 2, count: 5 }
    );
    for bad in ["5/5", "1", "a/2", "0/0"] {
        assert!(bad.parse::<ShardSpec>().is_err(), "{bad}");
    }
    for n in 1..5 {
        for song in 0..13 {
            let owners = (0..n).filter(|&i| ShardSpec::new(i, n).unwrap().contains(song));
            assert_eq!(owners.count(), 1);
        }
    }
}

fn cache_config() -> CacheConfig {
    CacheConfig {
        pairs: config(0.5),
        pairs_per_song: 2,
        seed: 42,
    }
}

#[test]
fn cache_round_trip_and_shards_match_a_single_run() {
    let root = dataset(3, 1.0);
    let codec = encodec();
    let cfg = cache_config();

    let whole = tempfile::tempdir().unwrap();
    let summary = write_shard(
        root.path(),
        &codec,
        &cfg,
        ShardSpec::ALL,
        whole.path(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(summary.songs, 3);
    assert_eq!(summary.pairs, 6);
    assert!(summary.path.ends_with("cache-0-of-1.safetensors"));
    assert_eq!(summary.skipped_files.len(), 3, "one kazoo per song");

    let split = tempfile::tempdir().unwrap();
    let mut songs_per_shard = Vec::new();
    for i in 0..2 {
        let s = write_shard(
            root.path(),
            &codec,
            &cfg,
            ShardSpec::new(i, 2).unwrap(),
            split.path(),
            &mut |_, _| {},
        )
        .unwrap();
        songs_per_shard.push(s.songs);
    }
    assert_eq!(songs_per_shard, vec![2, 1]);

    let a = TokenCache::open(whole.path()).unwrap();
    let b = TokenCache::open(split.path()).unwrap();
    assert_eq!(a.len(), 6);
    assert_eq!(a.info.tokenizer, "encodec");
    assert_eq!(a.info.levels, codec.num_levels());
    assert_eq!(a.info.frames, 25, "0.5 s at 50 Hz");
    assert_eq!(a.info.shard_count, 1);
    assert_eq!(b.info.shard_count, 2);

    // The same pairs whatever the sharding: every song exactly once, same codes.
    let key = |c: &TokenCache| {
        let mut v: Vec<_> = (0..c.len())
            .map(|i| {
                let (ctx, tgt) = c.pair_codes(i).unwrap();
                (
                    c.song_index(i).unwrap(),
                    c.category(i).unwrap().id(),
                    ctx.to_vec(),
                    tgt.to_vec(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let ka = key(&a);
    assert_eq!(ka, key(&b));
    let mut songs: Vec<usize> = ka.iter().map(|k| k.0).collect();
    songs.dedup();
    assert_eq!(songs, vec![0, 1, 2]);

    // The cached codes are the codec's tokens of the drawn pair.
    let song = load_song(&root.path().join("song-00001"), SR).unwrap();
    let mut rng = StdRng::seed_from_u64(stemgen::data::cache::song_seed(cfg.seed, 1));
    let pair = draw_pair(&song, &cfg.pairs, &mut rng).unwrap();
    let tokens = codec
        .encode(&pair.target, &mut stemgen::codec::no_progress())
        .unwrap();
    assert!(ka
        .iter()
        .any(|k| k.0 == 1 && k.1 == pair.category.id() && k.3 == tokens.codes));

    // Batches.
    let mut sampler = a.sampler(5);
    let batch = sampler.next_batch(4, &Device::Cpu).unwrap();
    assert_eq!(batch.context.dims(), &[4, a.info.levels, 25]);
    assert_eq!(batch.target.dims(), &[4, a.info.levels, 25]);
    assert_eq!(batch.category.dims(), &[4]);
    assert_eq!(batch.context.dtype(), DType::U32);
    assert_eq!(batch.category.dtype(), DType::U32);
    let first: Vec<u32> = batch.category.to_vec1().unwrap();
    let again: Vec<u32> = a
        .sampler(5)
        .next_batch(4, &Device::Cpu)
        .unwrap()
        .category
        .to_vec1()
        .unwrap();
    assert_eq!(first, again, "seeded sampling");
    // An epoch visits every pair once.
    let mut s = a.sampler(9);
    let mut seen = s.next_indices(6).unwrap();
    seen.sort();
    assert_eq!(seen, (0..6).collect::<Vec<_>>());
}

#[test]
fn mismatched_or_missing_shards_are_clear_errors() {
    let root = dataset(2, 1.0);
    let codec = encodec();
    let dir = tempfile::tempdir().unwrap();
    let cfg = CacheConfig {
        pairs_per_song: 1,
        ..cache_config()
    };
    write_shard(
        root.path(),
        &codec,
        &cfg,
        ShardSpec::new(0, 2).unwrap(),
        dir.path(),
        &mut |_, _| {},
    )
    .unwrap();
    let err = format!("{:#}", TokenCache::open(dir.path()).unwrap_err());
    assert!(err.contains("missing cache-1-of-2.safetensors"), "{err}");

    let other = CacheConfig {
        pairs: config(0.3),
        ..cfg
    };
    write_shard(
        root.path(),
        &codec,
        &other,
        ShardSpec::new(1, 2).unwrap(),
        dir.path(),
        &mut |_, _| {},
    )
    .unwrap();
    let err = format!("{:#}", TokenCache::open(dir.path()).unwrap_err());
    assert!(
        err.contains("disagree") && err.contains("cache-1-of-2"),
        "{err}"
    );
    assert!(
        err.contains("25 frames") && err.contains("15 frames"),
        "{err}"
    );
}

#[test]
fn caches_of_several_seeds_join_and_disagreeing_ones_are_named() {
    let root = dataset(2, 1.0);
    let codec = encodec();
    let write = |cfg: &CacheConfig| {
        let dir = tempfile::tempdir().unwrap();
        write_shard(
            root.path(),
            &codec,
            cfg,
            ShardSpec::ALL,
            dir.path(),
            &mut |_, _| {},
        )
        .unwrap();
        dir
    };
    let cfg = CacheConfig {
        pairs_per_song: 1,
        ..cache_config()
    };
    let a = write(&cfg);
    let b = write(&CacheConfig {
        seed: 7,
        ..cfg.clone()
    });
    let dirs = [a.path().to_path_buf(), b.path().to_path_buf()];
    let joined = TokenCache::open_all(&dirs).unwrap();
    let (first, second) = (
        TokenCache::open(a.path()).unwrap(),
        TokenCache::open(b.path()).unwrap(),
    );
    assert_eq!(joined.len(), first.len() + second.len());
    // The second folder's pairs follow the first's, with their song indices kept.
    for i in 0..second.len() {
        let j = first.len() + i;
        assert_eq!(joined.pair_codes(j).unwrap(), second.pair_codes(i).unwrap());
        assert_eq!(joined.song_index(j).unwrap(), second.song_index(i).unwrap());
    }
    let short = write(&CacheConfig {
        pairs: config(0.3),
        ..cfg
    });
    let err = format!(
        "{:#}",
        TokenCache::open_all(&[a.path().to_path_buf(), short.path().to_path_buf()]).unwrap_err()
    );
    assert!(
        err.contains("disagree") && err.contains("15 frames"),
        "{err}"
    );
    assert!(err.contains(&short.path().display().to_string()), "{err}");
    assert!(TokenCache::open_all(&[]).is_err());
}

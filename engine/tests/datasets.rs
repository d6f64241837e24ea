//! Dataset loaders (Slakh2100, MUSDB18-HQ, MoisesDB, plain) on tiny fake datasets written in
//! each layout.

use std::path::Path;

use stemgen::audio::{write_wav, Audio, WavFormat};
use stemgen::data::datasets::{
    list_dataset, list_songs, load_dataset, load_song_source, parse_slakh_metadata, DatasetLayout,
    DatasetOptions,
};
use stemgen::data::Category;

const SR: u32 = 8_000;

/// A short constant-valued clip (0.05 s), so sums are easy to check.
fn write_const(path: &Path, value: f32) {
    let audio = Audio::mono(SR, vec![value; 400]).unwrap();
    write_wav(path, &audio, WavFormat::Float32).unwrap();
}

fn mean(x: &[f32]) -> f32 {
    x.iter().sum::<f32>() / x.len() as f32
}

const SLAKH_META: &str = r#"UUID: 0123abcd
audio_dir: stems
midi_dir: MIDI
normalized: true
overall_gain: 0.2
stems:
  S00:
    audio_rendered: true
    inst_class: Bass   # a comment
    integrated_loudness: -14.1
    is_drum: false
    midi_program_name: Electric Bass (finger)
    program_num: 33
  S01:
    audio_rendered: true
    inst_class: "Strings (continued)"
    is_drum: false
    program_num: 48
  'S02':
    audio_rendered: false
    inst_class: Piano
    is_drum: false
    program_num: 0
  S03:
    audio_rendered: true
    inst_class: Drums
    is_drum: true
    program_num: 0
  S04:
    audio_rendered: true
    inst_class: 'Kazoo Orchestra'
    is_drum: false
    program_num: 200
  S05:
    audio_rendered: true
    is_drum: false
    program_num: 27
  S06:
    audio_rendered: true
    inst_class: Guitar
    is_drum: false
    program_num: 25
target_peak: -1.0
"#;

fn make_slakh(root: &Path) {
    let track = root.join("train").join("Track00001");
    std::fs::create_dir_all(track.join("stems")).unwrap();
    std::fs::write(track.join("metadata.yaml"), SLAKH_META).unwrap();
    for (i, stem) in ["S00", "S01", "S02", "S03", "S04", "S05"]
        .iter()
        .enumerate()
    {
        // .wav in place of Slakh's .flac: the loader accepts either extension.
        write_const(
            &track.join("stems").join(format!("{stem}.wav")),
            0.1 * i as f32,
        );
    }
    // S06 has no audio file.
}

#[test]
fn slakh_detect_map_and_skip() {
    let tmp = tempfile::tempdir().unwrap();
    make_slakh(tmp.path());
    let (layout, songs) = list_dataset(tmp.path()).unwrap();
    assert_eq!(layout, DatasetLayout::Slakh);
    assert_eq!(songs.len(), 1);
    let song = &songs[0];
    assert_eq!(song.id, "train/Track00001");
    let got: Vec<(Category, String)> = song
        .stems
        .iter()
        .map(|(c, p)| (*c, p.file_stem().unwrap().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Category::Bass, "S00".into()),
            (Category::Ensemble, "S01".into()),
            (Category::Drums, "S03".into()),
            // no inst_class: program 27 (electric guitar) gives the family
            (Category::Guitar, "S05".into()),
        ]
    );
    let reasons: Vec<String> = song.skipped.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("audio_rendered"), "{reasons:?}");
    assert!(reasons[1].contains("Kazoo Orchestra"), "{reasons:?}");
    assert!(reasons[2].contains("missing"), "{reasons:?}");

    let loaded = load_song_source(song, SR).unwrap();
    assert_eq!(loaded.stems.len(), 4);
    assert_eq!(loaded.len, 400);
    assert_eq!(loaded.skipped.len(), 3);
    let drums = loaded
        .stems
        .iter()
        .find(|s| s.category == Category::Drums)
        .unwrap();
    assert!((mean(&drums.samples) - 0.3).abs() < 1e-4);
}

#[test]
fn slakh_metadata_parser_handles_indentation_and_quotes() {
    let text = "stems:\n    \"S00\":   # first\n        inst_class: 'Synth Lead'\n        \
                is_drum: False\n        audio_rendered: yes\n        program_num: 81\n\n    \
                S01:\n        inst_class: \"Piano # not a comment\"\n        is_drum: true\n\
                other: 1\n";
    let meta = parse_slakh_metadata(text).unwrap();
    assert_eq!(meta.audio_dir, None);
    assert_eq!(meta.stems.len(), 2);
    assert_eq!(meta.stems[0].name, "S00");
    assert_eq!(meta.stems[0].inst_class.as_deref(), Some("Synth Lead"));
    assert_eq!(meta.stems[0].is_drum, Some(false));
    assert_eq!(meta.stems[0].audio_rendered, Some(true));
    assert_eq!(meta.stems[0].program_num, Some(81));
    assert_eq!(
        meta.stems[1].inst_class.as_deref(),
        Some("Piano # not a comment")
    );
    assert_eq!(meta.stems[1].is_drum, Some(true));

    let err = parse_slakh_metadata("stems:\n  S00:\n    is_drum: maybe\n").unwrap_err();
    assert!(format!("{err:#}").contains("is_drum"), "{err:#}");
    let err = parse_slakh_metadata("stems:\n\tS00:\n").unwrap_err();
    assert!(format!("{err:#}").contains("tab"), "{err:#}");
}

#[test]
fn slakh_broken_metadata_and_unreadable_stem_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let track = tmp.path().join("Track00002");
    std::fs::create_dir_all(track.join("stems")).unwrap();
    std::fs::write(
        track.join("metadata.yaml"),
        "stems:\n  S00:\n    is_drum: 7\n",
    )
    .unwrap();
    let err = format!("{:#}", list_dataset(tmp.path()).unwrap_err());
    assert!(err.contains("metadata.yaml"), "{err}");

    // A file named .flac that is not FLAC: listed, then a read error naming it.
    std::fs::write(
        track.join("metadata.yaml"),
        "stems:\n  S00:\n    inst_class: Organ\n    is_drum: false\n    audio_rendered: true\n",
    )
    .unwrap();
    std::fs::write(track.join("stems").join("S00.flac"), b"not audio").unwrap();
    let (_, songs) = list_dataset(tmp.path()).unwrap();
    assert_eq!(songs[0].stems[0].0, Category::Organ);
    let err = format!("{:#}", load_song_source(&songs[0], SR).unwrap_err());
    assert!(err.contains("S00.flac"), "{err}");

    // Every stem unrendered: no usable stems, error names the folder and the reasons.
    std::fs::write(
        track.join("metadata.yaml"),
        "stems:\n  S00:\n    inst_class: Organ\n    audio_rendered: false\n",
    )
    .unwrap();
    let err = format!("{:#}", list_dataset(tmp.path()).unwrap_err());
    assert!(err.contains("Track00002"), "{err}");
    assert!(err.contains("audio_rendered"), "{err}");
}

#[test]
fn musdb_layout() {
    let tmp = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        let song = tmp
            .path()
            .join(split)
            .join(format!("Artist - {split} song"));
        std::fs::create_dir_all(&song).unwrap();
        for (name, v) in [
            ("mixture", 0.9),
            ("drums", 0.1),
            ("bass", 0.2),
            ("other", 0.3),
            ("vocals", 0.4),
        ] {
            write_const(&song.join(format!("{name}.wav")), v);
        }
        write_const(&song.join("accompaniment.wav"), 0.5);
    }
    assert_eq!(
        DatasetLayout::detect(tmp.path()).unwrap(),
        DatasetLayout::Musdb
    );
    let songs = load_dataset(tmp.path(), SR).unwrap();
    assert_eq!(songs.len(), 2);
    assert_eq!(songs[0].id, "test/Artist - test song");
    let cats: Vec<Category> = songs[0].stems.iter().map(|s| s.category).collect();
    assert_eq!(
        cats,
        vec![
            Category::Guitar,
            Category::Bass,
            Category::Drums,
            Category::Vocals
        ]
    );
    // mixture is never used; the unknown file is reported.
    assert!(songs[0]
        .stems
        .iter()
        .all(|s| s.paths.iter().all(|p| !p.ends_with("mixture.wav"))));
    assert_eq!(songs[0].skipped.len(), 1);
    assert!(songs[0].skipped[0].1.contains("accompaniment"));

    // `other` skipped on request.
    let opts = DatasetOptions { other: None };
    let srcs = list_songs(tmp.path(), DatasetLayout::Musdb, &opts).unwrap();
    assert_eq!(srcs[0].categories().len(), 3);
    assert!(srcs[0]
        .skipped
        .iter()
        .any(|(p, _)| p.ends_with("other.wav")));
}

#[test]
fn moises_layout_sums_files_and_skips_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let song = tmp.path().join("0a1b2c3d-uuid");
    std::fs::create_dir_all(&song).unwrap();
    std::fs::write(song.join("data.json"), r#"{"song": "x", "stems": []}"#).unwrap();
    write_const(&song.join("guitar").join("aaa.wav"), 0.1);
    write_const(&song.join("guitar").join("bbb.wav"), 0.25);
    write_const(&song.join("bowed_strings").join("ccc.wav"), 0.2);
    write_const(&song.join("other_keys").join("ddd.wav"), 0.2);
    write_const(&song.join("theremin").join("eee.wav"), 0.2);
    std::fs::create_dir_all(song.join("wind")).unwrap();

    let (layout, srcs) = list_dataset(tmp.path()).unwrap();
    assert_eq!(layout, DatasetLayout::Moises);
    assert_eq!(
        srcs[0].categories(),
        vec![Category::Organ, Category::Guitar, Category::Strings]
    );
    assert_eq!(srcs[0].skipped.len(), 2, "{:?}", srcs[0].skipped);
    assert!(srcs[0]
        .skipped
        .iter()
        .any(|(p, r)| p.ends_with("theremin") && r.contains("not a MoisesDB stem")));
    let song = load_song_source(&srcs[0], SR).unwrap();
    let guitar = song
        .stems
        .iter()
        .find(|s| s.category == Category::Guitar)
        .unwrap();
    assert_eq!(guitar.paths.len(), 2);
    assert!((mean(&guitar.samples) - 0.35).abs() < 1e-4);
}

#[test]
fn plain_layout_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let song = tmp.path().join("song1");
    std::fs::create_dir_all(&song).unwrap();
    write_const(&song.join("bass.wav"), 0.1);
    write_const(&song.join("piano_1.wav"), 0.1);
    write_const(&song.join("piano_2.wav"), 0.2);
    write_const(&song.join("kazoo.wav"), 0.2);
    std::fs::write(song.join("metadata.json"), "{}").unwrap();
    let (layout, srcs) = list_dataset(tmp.path()).unwrap();
    assert_eq!(layout, DatasetLayout::Plain);
    assert_eq!(srcs[0].categories(), vec![Category::Piano, Category::Bass]);
    assert_eq!(srcs[0].skipped.len(), 1);
    let loaded = load_song_source(&srcs[0], SR).unwrap();
    assert!((mean(&loaded.stems[0].samples) - 0.3).abs() < 1e-4);

    // A song folder without stems is an error naming it.
    std::fs::create_dir_all(tmp.path().join("song2")).unwrap();
    let err = format!("{:#}", list_dataset(tmp.path()).unwrap_err());
    assert!(err.contains("song2"), "{err}");

    // Empty and missing roots.
    let empty = tempfile::tempdir().unwrap();
    let err = format!("{:#}", list_dataset(empty.path()).unwrap_err());
    assert!(err.contains(&empty.path().display().to_string()), "{err}");
    let missing = empty.path().join("nope");
    let err = format!("{:#}", DatasetLayout::detect(&missing).unwrap_err());
    assert!(err.contains("nope"), "{err}");

    assert_eq!(
        "MUSDB18-HQ".parse::<DatasetLayout>().unwrap(),
        DatasetLayout::Musdb
    );
    assert!("foo".parse::<DatasetLayout>().is_err());
}

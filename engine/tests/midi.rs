//! engine::data::midi: MIDI files built here (tempo change, program change, drums, pitch bend,
//! a corrupt file) rendered into song folders with the small TimGM6mb SoundFont.

use std::path::Path;

use midly::num::{u14, u15, u24, u28, u4, u7};
use midly::{Format, Header, MetaMessage, MidiMessage, PitchBend, Smf, Timing, TrackEvent};
use midly::{TrackEventKind as Kind, TrackEventKind};
use stemgen::audio::read_audio;
use stemgen::data::datasets::list_dataset;
use stemgen::data::midi::{
    convert_folder, parse_midi, render_mix, render_stems, Converted, MidiSongMetadata,
};
use stemgen::data::pair_features::song_chords;
use stemgen::data::synth::{load_soundfont, RenderOptions, TIMGM6MB};
use stemgen::data::Category;

const TICKS: u16 = 480;

fn ev(delta: u32, kind: TrackEventKind<'static>) -> TrackEvent<'static> {
    TrackEvent {
        delta: u28::new(delta),
        kind,
    }
}

fn midi(channel: u8, message: MidiMessage) -> TrackEventKind<'static> {
    Kind::Midi {
        channel: u4::new(channel),
        message,
    }
}

fn note(channel: u8, key: u8, on: bool) -> TrackEventKind<'static> {
    let (key, vel) = (u7::new(key), u7::new(if on { 100 } else { 0 }));
    midi(
        channel,
        if on {
            MidiMessage::NoteOn { key, vel }
        } else {
            MidiMessage::NoteOff { key, vel }
        },
    )
}

/// Two bars: bar 1 at 120 BPM (2 s), bar 2 at 240 BPM (1 s). A bass line on channel 1, drums
/// on channel 10, and channel 2 as a piano (with a pitch bend) that becomes a violin in bar 2.
fn song_file() -> Vec<u8> {
    let bar = 4 * u32::from(TICKS);
    let conductor = vec![
        ev(0, Kind::Meta(MetaMessage::Tempo(u24::new(500_000)))),
        ev(0, Kind::Meta(MetaMessage::TimeSignature(4, 2, 24, 8))),
        ev(0, Kind::Meta(MetaMessage::KeySignature(-3, false))),
        ev(bar, Kind::Meta(MetaMessage::Tempo(u24::new(250_000)))),
        ev(bar, Kind::Meta(MetaMessage::EndOfTrack)),
    ];
    let mut bass = vec![ev(
        0,
        midi(
            0,
            MidiMessage::ProgramChange {
                program: u7::new(33),
            },
        ),
    )];
    let mut drums = Vec::new();
    for _ in 0..8 {
        bass.extend([
            ev(0, note(0, 39, true)),
            ev(u32::from(TICKS), note(0, 39, false)),
        ]);
        drums.extend([
            ev(0, note(9, 36, true)),
            ev(u32::from(TICKS), note(9, 36, false)),
        ]);
    }
    bass.push(ev(0, Kind::Meta(MetaMessage::EndOfTrack)));
    drums.push(ev(0, Kind::Meta(MetaMessage::EndOfTrack)));
    let keys = vec![
        ev(
            0,
            midi(
                1,
                MidiMessage::ProgramChange {
                    program: u7::new(0),
                },
            ),
        ),
        ev(0, note(1, 63, true)),
        ev(
            u32::from(TICKS),
            midi(
                1,
                MidiMessage::PitchBend {
                    bend: PitchBend(u14::new(12_000)),
                },
            ),
        ),
        ev(u32::from(TICKS), note(1, 63, false)),
        ev(
            2 * u32::from(TICKS),
            midi(
                1,
                MidiMessage::ProgramChange {
                    program: u7::new(40),
                },
            ),
        ),
        ev(
            0,
            midi(
                1,
                MidiMessage::Controller {
                    controller: u7::new(7),
                    value: u7::new(90),
                },
            ),
        ),
        ev(0, note(1, 67, true)),
        ev(bar, note(1, 67, false)),
        ev(0, Kind::Meta(MetaMessage::EndOfTrack)),
    ];
    let smf = Smf {
        header: Header::new(Format::Parallel, Timing::Metrical(u15::new(TICKS))),
        tracks: vec![conductor, bass, drums, keys],
    };
    let mut bytes = Vec::new();
    smf.write_std(&mut bytes).unwrap();
    bytes
}

#[test]
fn midi_files_become_song_folders_whose_stems_sum_to_the_mix() {
    let song = parse_midi(&song_file()).unwrap();
    assert_eq!(song.facts.tempo_map, vec![(0.0, 120.0), (2.0, 240.0)]);
    assert!(
        (song.facts.seconds - 3.0).abs() < 1e-9,
        "{}",
        song.facts.seconds
    );
    assert_eq!(song.facts.key_signature.as_deref(), Some("Eb major"));
    assert_eq!(song.facts.time_signatures, vec![(0.0, 4, 4)]);
    // The program change in bar 2 moves channel 2's later notes to strings.
    assert_eq!(
        song.categories(),
        vec![
            Category::Piano,
            Category::Bass,
            Category::Strings,
            Category::Drums
        ]
    );

    let font = load_soundfont(Path::new(TIMGM6MB)).unwrap();
    let options = RenderOptions::default();
    let stems = render_stems(&song, &font, &options).unwrap();
    let mix = render_mix(&song, &font, &options).unwrap();
    let frames = 4 * 32_000;
    assert_eq!(mix.num_frames(), frames);
    let mut worst = 0.0f32;
    for ch in 0..2 {
        for i in 0..frames {
            let sum: f32 = stems.iter().map(|(_, a)| a.channels[ch][i]).sum();
            worst = worst.max((sum - mix.channels[ch][i]).abs());
        }
    }
    let peak = mix
        .channels
        .iter()
        .flatten()
        .fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(
        peak > 0.01 && worst < 1e-4 * peak.max(1.0),
        "worst {worst}, peak {peak}"
    );
    for (category, audio) in &stems {
        assert_eq!(audio.num_frames(), frames, "{category:?}");
        assert!(!audio.is_silent(-50.0), "{category:?} is silent");
    }
    // Strings start in bar 2 (2 s): nothing before it.
    let strings = &stems
        .iter()
        .find(|(c, _)| *c == Category::Strings)
        .unwrap()
        .1;
    assert!(strings.channels[0][..60_000].iter().all(|s| s.abs() < 1e-6));
}

#[test]
fn a_folder_converts_with_bad_files_named_and_skipped() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(input.path().join("song.mid"), song_file()).unwrap();
    // Its chords per bar: placed with the tempo map (bar 2 is at 240 BPM).
    std::fs::write(
        input.path().join("song.chords.json"),
        r#"{"bars": [["Am"], ["F", "G7"]]}"#,
    )
    .unwrap();
    std::fs::create_dir(input.path().join("sub")).unwrap();
    std::fs::write(
        input.path().join("sub/broken.mid"),
        b"MThd\0\0\0\x06garbage",
    )
    .unwrap();
    // A file without notes is not a song either.
    let empty = Smf {
        header: Header::new(Format::SingleTrack, Timing::Metrical(u15::new(TICKS))),
        tracks: vec![vec![ev(0, Kind::Meta(MetaMessage::EndOfTrack))]],
    };
    let mut bytes = Vec::new();
    empty.write_std(&mut bytes).unwrap();
    std::fs::write(input.path().join("empty.midi"), bytes).unwrap();
    std::fs::write(input.path().join("notes.txt"), b"not midi").unwrap();

    let font = load_soundfont(Path::new(TIMGM6MB)).unwrap();
    let run = || {
        convert_folder(
            input.path(),
            out.path(),
            &font,
            "TimGM6mb.sf2",
            &RenderOptions::default(),
            &|_| {},
        )
        .unwrap()
    };
    let results = run();
    assert_eq!(results.len(), 3, "{results:?}");
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| match r {
            Converted::Failed(file, problem) => Some(format!("{}: {problem}", file.display())),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed
        .iter()
        .any(|f| f.contains("broken.mid") && f.contains("not a readable")));
    assert!(failed
        .iter()
        .any(|f| f.contains("empty.midi") && f.contains("no notes")));

    let song_dir = out.path().join("song");
    let meta: MidiSongMetadata =
        serde_json::from_str(&std::fs::read_to_string(song_dir.join("metadata.json")).unwrap())
            .unwrap();
    assert_eq!(meta.stems, vec!["piano", "bass", "strings", "drums"]);
    assert_eq!(meta.tempo_map, vec![(0.0, 120.0), (2.0, 240.0)]);
    let chords: Vec<(f64, f64, &str)> = meta
        .chords
        .iter()
        .map(|(a, b, c)| (*a, *b, c.as_str()))
        .collect();
    assert_eq!(
        chords,
        vec![(0.0, 2.0, "Am"), (2.0, 2.5, "F"), (2.5, 3.0, "G7")]
    );
    // What training reads as the song's chords.
    let spans = song_chords(&song_dir).unwrap().unwrap();
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[2].chord.as_ref().unwrap().symbol, "G7");
    let bass = read_audio(&song_dir.join("bass.wav")).unwrap();
    assert_eq!((bass.sample_rate, bass.num_channels()), (32_000, 2));
    // The dataset reader sees one song with its four stems.
    let (_, songs) = list_dataset(out.path()).unwrap();
    assert_eq!(songs.len(), 1);
    assert_eq!(songs[0].categories().len(), 4);
    // Run again: the finished song is skipped, the bad files are reported again.
    let again = run();
    assert!(again.iter().any(|r| matches!(r, Converted::Skipped(_))));
}

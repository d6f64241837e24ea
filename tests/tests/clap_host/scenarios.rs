//! Scenarios 1 to 4, run in order on one project by
//! `capture_generate_play_restore_in_a_clap_host`: capture and generate, play in time,
//! restore at another rate or into a running instance, then every rate and block size.

use std::path::PathBuf;

use serde_json::Value;
use stemgen::audio::{read_audio, Audio};

use crate::fixture::env;
use crate::host::Plugin;
use crate::render::{at_beat, seconds, Input, Span, Stereo};
use crate::state::{assert_plays_take, session_of, takes, wait_for_takes, with_param};
use crate::{custom_bars, CUSTOM_LENGTH, DRAFT, OFF, ON, TEMPO};

/// The plugin as a DAW sees it: ports and the parameter value mapping this test relies on.
pub(crate) fn parameters_are_reported_as_nice_plug_maps_them(plugin: &mut Plugin) {
    plugin.check_audio_ports();
    for (name, steps) in [
        ("Capture length", 3.0),
        ("Custom bars", 31.0),
        ("Quality", 2.0),
        ("Capture", 1.0),
        ("Stem only", 1.0),
        ("Generate after capture", 1.0),
    ] {
        assert_eq!(plugin.param(name).max, steps, "CLAP range of {name:?}");
    }
    plugin.assert_value("Generate after capture", ON);
}

/// Scenario 1: Capture pressed mid-bar while playing starts at the next bar line, lasts the
/// chosen bars, and the worker turns it into a take while the host keeps playing.
pub(crate) fn capture_starts_at_the_next_bar_and_becomes_a_take(a: &mut Plugin) -> (Value, Audio) {
    let rate = a.rate;
    let start = at_beat(1.5, rate);
    // Up to beat 13: the capture runs from beat 4 to beat 12.
    let frames = (at_beat(13.0, rate) - start) as usize;
    a.render(
        Span::playing(start, frames)
            .input(Input::Music)
            .blocks(&[480, 1000, 37, 4096])
            .changes(&[
                ("Capture length", CUSTOM_LENGTH),
                ("Custom bars", custom_bars(2)),
                ("Quality", DRAFT),
                ("Capture", ON),
            ]),
    );
    a.assert_value("Capture length", CUSTOM_LENGTH);
    a.assert_value("Custom bars", custom_bars(2));
    a.assert_value("Quality", DRAFT);

    // Release the button, then keep the song playing while the take is generated.
    let mut position = start + frames as i64;
    let chunk = seconds(0.1, rate);
    a.render(
        Span::playing(position, chunk)
            .input(Input::Music)
            .changes(&[("Capture", OFF)]),
    );
    position += chunk as i64;
    let session = wait_for_takes(a, 1, |a| {
        a.render(Span::playing(position, chunk).input(Input::Music));
        position += chunk as i64;
    });

    let takes = takes(&session);
    assert_eq!(takes.len(), 1, "one capture, one take: {session}");
    let take = takes[0].clone();
    let anchor = &take["anchor"];
    assert_eq!(
        anchor["start_beats"], 4.0,
        "the capture starts at the next bar line: {take}"
    );
    assert_eq!(anchor["start_samples"], at_beat(4.0, rate), "{take}");
    assert_eq!(anchor["tempo"], TEMPO, "{take}");
    assert_eq!(take["tempo"], TEMPO, "{take}");
    assert_eq!(take["bars"], 2.0, "{take}");
    assert_eq!(
        take["start_bar"], 1,
        "beat 4 is the second bar (0-based 1): {take}"
    );
    assert_eq!(take["time_sig"], serde_json::json!([4, 4]), "{take}");
    assert_eq!(take["sample_rate"], rate as u32, "{take}");
    assert_eq!(session["selected"], take["id"], "the new take is selected");

    let path = PathBuf::from(take["path"].as_str().expect("take path"));
    assert!(
        path.is_file(),
        "the take's WAV {} is missing",
        path.display()
    );
    assert!(
        path.starts_with(&env().takes_root),
        "{} is not under STEMGEN_TAKES_DIR",
        path.display()
    );
    let wav = read_audio(&path).expect("the take's WAV cannot be read");
    assert_eq!(wav.sample_rate, rate as u32);
    assert_eq!(wav.channels.len(), 2);
    assert_eq!(
        wav.num_frames(),
        seconds(4.0, rate),
        "two bars at 120 BPM last 4 s"
    );
    assert!(wav.channels.iter().flatten().all(|s| s.is_finite()));
    (take, wav)
}

/// Scenario 2: the take plays under the playhead, sample for sample, also after seeks.
pub(crate) fn the_take_plays_in_time_with_the_timeline(a: &mut Plugin, wav: &Audio) {
    let rate = a.rate;
    let anchor = at_beat(4.0, rate);
    let len = wav.num_frames() as i64;
    a.render(Span::playing(0, 64).changes(&[("Stem only", ON)]));
    a.wait_until_take_plays(anchor);
    let windows = [
        (anchor - 1000, seconds(1.0, rate), &[512][..]),
        // Seeks: the middle, just after the start, across the end.
        (anchor + len / 2, 20_000, &[333, 1024, 64][..]),
        (anchor + 1500, 3000, &[1, 7, 4096][..]),
        (anchor + len - 2000, 6000, &[4096][..]),
    ];
    for (start, frames, blocks) in windows {
        let out = a.render(Span::playing(start, frames).blocks(blocks));
        assert_plays_take(&out, start, wav, anchor);
    }
    let stopped = a.render(Span::stopped(anchor + 1000, 4096));
    assert_eq!(
        stopped.peak(),
        0.0,
        "nothing plays while the transport is stopped"
    );
}

/// Scenario 3: a project reopened at another sample rate: the state brings the take back and it
/// plays at its anchor, resampled and still aligned.
pub(crate) fn the_state_restores_the_take_at_another_rate(state: &[u8], wav: &Audio) {
    let mut b = Plugin::new();
    b.load_state(state);
    assert_eq!(
        takes(&b.session()),
        takes(&session_of(state)),
        "the restored session has the takes"
    );
    let rate = 96_000.0;
    b.activate(rate, 4096);
    let anchor = at_beat(4.0, rate);
    let out = b.wait_until_take_plays(anchor);
    let before = 1000; // wait_until_take_plays renders from anchor - 1000
    assert!(
        out.left[..before]
            .iter()
            .chain(&out.right[..before])
            .all(|&s| s == 0.0),
        "silence before the anchor"
    );
    let after = out.left[before..]
        .iter()
        .fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(
        after > 1e-3,
        "the take plays after the anchor (peak {after})"
    );

    // At twice the rate, output frame 2k is the take's frame k; the alignment is exact when no
    // other lag fits better.
    let error_at = |lag: i64| -> f64 {
        (20..3400)
            .map(|k: i64| {
                let played = out.left[(before as i64 + 2 * k + lag) as usize] as f64;
                (played - wav.channels[0][k as usize] as f64).powi(2)
            })
            .sum()
    };
    let energy: f64 = (20..3400)
        .map(|k| (wav.channels[0][k] as f64).powi(2))
        .sum();
    let (best, _) = (-8..=8i64)
        .map(|lag| (lag, error_at(lag)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert_eq!(
        best, 0,
        "the resampled take is shifted by {best} samples at 96 kHz"
    );
    assert!(
        error_at(0) < 1e-3 * energy,
        "the resampled take differs from the original: error {} vs energy {energy}",
        error_at(0)
    );
}

/// Scenario 3b: a host loads a project into an instance that is already running (a preset
/// recall): the restored selected take plays without a re-activation, and a Capture switch saved
/// "on" does not start a capture when the project opens.
pub(crate) fn a_state_loaded_while_running_brings_its_take(state: &[u8], wav: &Audio) {
    let rate = 48_000.0;
    let mut e = Plugin::new();
    e.activate(rate, 1024);
    e.render(Span::playing(0, 4096).input(Input::Music));
    e.load_state(&with_param(state, "capture", Value::Bool(true)));
    let anchor = at_beat(4.0, rate);
    let out = e.wait_until_take_plays(anchor);
    assert_plays_take(&out, anchor - 1000, wav, anchor);
    // Four bars of music later, still no capture started by the restored switch.
    e.render(Span::playing(anchor, seconds(8.0, rate)).input(Input::Music));
    let before: Value = session_of(state);
    assert_eq!(
        e.session()["next_take_id"],
        before["next_take_id"],
        "a restored Capture switch started a capture"
    );
}

/// Scenario 4: any rate, any block size (up to twice the plugin's 8192-frame scratch), and
/// non-finite input: the output stays finite and every sample is written; at the take's own
/// rate it is exactly the scrubbed input plus the take. (An allocation in `process` would abort
/// the test binary.)
pub(crate) fn any_rate_and_block_size_with_garbage_input(a: &mut Plugin, wav: &Audio) {
    let patterns: [&[usize]; 7] = [
        &[1],
        &[7],
        &[64],
        &[512],
        &[4096],
        &[10_000, 16_384],
        &[1, 300, 7, 4096, 64, 13],
    ];
    for rate in [44_100.0, 48_000.0, 96_000.0] {
        a.activate(rate, 16_384);
        let anchor = at_beat(4.0, rate);
        a.render(Span::playing(0, 64).changes(&[("Stem only", ON)]));
        a.wait_until_take_plays(anchor);
        for blocks in patterns {
            // Centred on the take's start; block size 1 gets a shorter stretch.
            let length = seconds(if blocks == [1] { 0.25 } else { 2.0 }, rate);
            let start = anchor - length as i64 / 2;
            // The input fades in over 10 ms when "Stem only" goes off: done before the span.
            a.render(Span::playing(start - 4096, 4096).changes(&[("Stem only", OFF)]));
            let out = a.render(
                Span::playing(start, length)
                    .blocks(blocks)
                    .input(Input::Garbage),
            );
            let bad = out.samples().position(|s| !s.is_finite() || s.abs() > 10.0);
            assert!(
                bad.is_none(),
                "{rate} Hz, blocks {blocks:?}: sample {bad:?} of the output is not finite or \
                 was not written"
            );
            if rate as u32 == wav.sample_rate {
                assert_input_plus_take(&out, start, wav, anchor, blocks);
            }
        }
    }
}

/// Checks `out` (rendered from `start` with garbage input passed through at unity gain) is the
/// input plus the take anchored at `anchor`, with non-finite sums replaced by silence.
fn assert_input_plus_take(out: &Stereo, start: i64, wav: &Audio, anchor: i64, blocks: &[usize]) {
    let rate = f64::from(wav.sample_rate);
    for (i, (&l, &r)) in out.left.iter().zip(&out.right).enumerate() {
        let t = start + i as i64;
        let (in_l, in_r) = Input::Garbage.frame(t, rate);
        let idx = t - anchor;
        let (take_l, take_r) = if (0..wav.num_frames() as i64).contains(&idx) {
            (wav.channels[0][idx as usize], wav.channels[1][idx as usize])
        } else {
            (0.0, 0.0)
        };
        let scrub = |s: f32| if s.is_finite() { s } else { 0.0 };
        let (el, er) = (scrub(in_l + take_l), scrub(in_r + take_r));
        assert!(
            (l - el).abs() <= 1e-5 && (r - er).abs() <= 1e-5,
            "blocks {blocks:?}, timeline sample {t}: output ({l}, {r}), expected ({el}, {er})"
        );
    }
}

//! The producer's loop with takes: a coarse preview heard before the take exists and replaced
//! by it, bars of a take re-generated as a new take that keeps the rest, and a take added to
//! the context of the next generation (stem by stem).

use std::path::PathBuf;

use serde_json::Value;
use stemgen::audio::{read_audio, Audio};

use crate::host::Plugin;
use crate::render::{at_beat, Input, Span};
use crate::state::{assert_plays_take, takes, with_session};
use crate::{custom_bars, CUSTOM_LENGTH, GENERATION_TIMEOUT, OFF, ON, PAPER};

/// The take's WAV and its sidecar.
fn take_files(take: &Value) -> (Audio, Value) {
    let wav = PathBuf::from(take["path"].as_str().expect("take path"));
    let audio = read_audio(&wav).expect("the take's WAV cannot be read");
    let sidecar = std::fs::read_to_string(wav.with_extension("json")).expect("no sidecar");
    (
        audio,
        serde_json::from_str(&sidecar).expect("the sidecar is not JSON"),
    )
}

/// The mono context a take was generated from (written beside it).
fn take_context(take: &Value) -> Vec<f32> {
    let wav = PathBuf::from(take["path"].as_str().expect("take path"));
    let context = read_audio(&wav.with_extension("context.wav")).expect("no context file");
    assert_eq!(context.channels.len(), 1, "the context is mono");
    context.channels[0].clone()
}

/// Plays the stretch of timeline where the take sits (stem only) until the session holds
/// `count` takes; returns the session and whether the stem was heard before that.
fn play_take_region_until(a: &mut Plugin, count: usize, anchor: i64, bars: f64) -> (Value, bool) {
    let frames = at_beat(4.0 * bars, a.rate) as usize;
    let mut heard_before = false;
    let session = a.wait_for("generated take", GENERATION_TIMEOUT, |p| {
        // Before the anchor too: nothing may play there (the preview sits where the take will).
        let out = p.render(Span::playing(anchor - 2000, frames + 2000));
        let session = p.session();
        if takes(&session).len() >= count {
            return Some(session);
        }
        if out.peak() > 0.0 {
            let early = out.left[..2000].iter().chain(&out.right[..2000]);
            assert!(
                early.into_iter().all(|&s| s == 0.0),
                "the preview plays before its anchor: it is out of sync with the timeline"
            );
            heard_before = true;
        }
        None
    });
    (session, heard_before)
}

/// Capture 4 bars -> a preview plays in time before the take exists and the take replaces it;
/// bars 2-3 re-generated keep the rest of the take; the take added to the context is in what
/// the next generation hears.
pub(crate) fn preview_region_and_stem_by_stem() {
    let rate = 48_000.0;
    let mut a = Plugin::new();
    a.activate(rate, 1024);
    a.render(Span::playing(0, 1024).changes(&[("Stem only", ON)]));
    // The capture arms at once and starts at the next bar line (beat 4), for 4 bars.
    let capture = |a: &mut Plugin| {
        a.render(
            Span::playing(
                at_beat(1.0, rate),
                (at_beat(21.0, rate) - at_beat(1.0, rate)) as usize,
            )
            .input(Input::Music)
            .changes(&[
                ("Capture length", CUSTOM_LENGTH),
                ("Custom bars", custom_bars(4)),
                ("Quality", PAPER),
                ("Capture", ON),
            ]),
        );
        a.render(Span::playing(at_beat(21.0, rate), 64).changes(&[("Capture", OFF)]));
    };
    capture(&mut a);
    let anchor = at_beat(4.0, rate);
    let (session, heard_preview) = play_take_region_until(&mut a, 1, anchor, 4.0);
    assert!(
        heard_preview,
        "no preview was heard before the take existed: {session}"
    );
    let first = takes(&session)[0].clone();
    let (first_audio, sidecar) = take_files(&first);
    let preview = sidecar["take"]["preview_seconds"]
        .as_f64()
        .expect("no preview time");
    assert!(
        preview < sidecar["take"]["generation_seconds"].as_f64().unwrap(),
        "{sidecar}"
    );
    // The full take replaced the preview (after its cross-fade).
    a.render(Span::playing(anchor, 4096));
    let out = a.render(Span::playing(anchor - 1000, 20_000));
    assert_plays_take(&out, anchor - 1000, &first_audio, anchor);

    // Bars 2-3 of take 1 (0-based 1..3), started by the Generate parameter.
    let state = with_session(&a.save_state(), |s| {
        s["region"] = serde_json::json!({"take": first["id"], "first": 1, "count": 2});
    });
    a.load_state(&state);
    a.render(Span::stopped(0, 64));
    a.render(Span::stopped(0, 64).changes(&[("Generate", ON)]));
    a.render(Span::stopped(0, 64).changes(&[("Generate", OFF)]));
    let session = a.wait_for("re-generated take", GENERATION_TIMEOUT, |p| {
        p.render(Span::stopped(0, 64));
        let session = p.session();
        (takes(&session).len() >= 2).then_some(session)
    });
    let second = takes(&session)[1].clone();
    let (second_audio, sidecar) = take_files(&second);
    assert_eq!(
        sidecar["take"]["regenerated"],
        serde_json::json!({"take": first["id"], "first": 1, "count": 2})
    );
    assert_eq!(second_audio.num_frames(), first_audio.num_frames());
    let bar = at_beat(4.0, rate) as usize;
    let fade = (0.020 * rate) as usize;
    for ch in 0..2 {
        let (old, new) = (&first_audio.channels[ch], &second_audio.channels[ch]);
        for i in (0..bar - fade).chain(3 * bar + fade..old.len()) {
            assert_eq!(old[i], new[i], "sample {i} outside bars 2-3 changed");
        }
        assert!(
            (bar + fade..3 * bar - fade).any(|i| old[i] != new[i]),
            "bars 2-3 were not re-generated"
        );
    }

    // Take 1 into the context, region cleared; capture the same bars again.
    let state = with_session(&a.save_state(), |s| {
        s["region"] = Value::Null;
        s["context_takes"] = serde_json::json!([first["id"]]);
    });
    a.load_state(&state);
    a.render(Span::playing(0, 1024));
    capture(&mut a);
    let (session, _) = play_take_region_until(&mut a, 3, anchor, 4.0);
    let third = takes(&session)[2].clone();
    assert_eq!(third["context_takes"], serde_json::json!([first["id"]]));
    // Same music at the same bars: the new context is the first one plus take 1 in mono.
    let (with_take, without) = (take_context(&third), take_context(&first));
    assert_eq!(with_take.len(), without.len());
    let mono: Vec<f32> = first_audio.channels[0]
        .iter()
        .zip(&first_audio.channels[1])
        .map(|(l, r)| 0.5 * (l + r))
        .collect();
    let mut energy = 0.0f32;
    for i in 0..with_take.len() {
        let added = with_take[i] - without[i];
        assert!(
            (added - mono[i]).abs() < 1e-4,
            "context sample {i}: {added} added, take 1 has {}",
            mono[i]
        );
        energy += mono[i] * mono[i];
    }
    assert!(energy > 1e-3, "take 1 is silent, so this proves nothing");
}

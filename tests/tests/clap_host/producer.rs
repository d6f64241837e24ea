//! The producer's settings and the plug-in's hygiene: chords and key saved with the project
//! and given to the generation, gains that move without clicks, and worker threads that leave
//! with the last instance.

use std::path::PathBuf;

use serde_json::Value;
use stemgen::audio::Audio;

use crate::host::Plugin;
use crate::render::{at_beat, seconds, Input, Span};
use crate::state::{takes, wait_for_takes, with_session};
use crate::{custom_bars, CUSTOM_LENGTH, DRAFT, GENERATION_TIMEOUT, OFF, ON, PAPER};

/// Chords and a key typed in the editor live in the session: a take made with them records
/// them in its sidecar, and they survive saving and reopening the project.
pub(crate) fn harmony_settings_reach_the_take_and_survive_a_reopen() {
    let rate = 48_000.0;
    let mut a = Plugin::new();
    a.activate(rate, 1024);
    let state = with_session(&a.save_state(), |s| {
        s["chords"] = "Am | F C".into();
        s["key"] = "A minor".into();
    });
    a.load_state(&state);
    // A trigger already on in the first block after a state load does not fire (a project
    // saved with it on must not capture when it opens): one block first, as a host plays.
    a.render(Span::playing(0, 1024));
    a.render(
        Span::playing(0, at_beat(6.0, rate) as usize)
            .input(Input::Music)
            .changes(&[
                ("Capture length", CUSTOM_LENGTH),
                ("Custom bars", custom_bars(1)),
                ("Quality", DRAFT),
                ("Capture", ON),
            ]),
    );
    let mut position = at_beat(6.0, rate);
    let session = wait_for_takes(&mut a, 1, |a| {
        a.render(Span::playing(position, 4096).changes(&[("Capture", OFF)]));
        position += 4096;
    });
    let take = &takes(&session)[0];
    let wav = PathBuf::from(take["path"].as_str().expect("take path"));
    let sidecar: Value =
        serde_json::from_str(&std::fs::read_to_string(wav.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(sidecar["generation"]["chords"], "Am | F C", "{sidecar}");
    assert_eq!(sidecar["generation"]["key"], "A minor", "{sidecar}");

    let saved = a.save_state();
    drop(a);
    let mut b = Plugin::new();
    b.load_state(&saved);
    let session = b.session();
    assert_eq!(session["chords"], "Am | F C", "{session}");
    assert_eq!(session["key"], "A minor", "{session}");
}

/// Largest change from one sample to the next of `out / reference` where the reference is
/// audible: the gain the plug-in applied, which a smoother or fade moves gradually.
fn largest_gain_step(out: &[f32], reference: &[f32]) -> f32 {
    let mut previous: Option<f32> = None;
    let mut largest = 0.0f32;
    for (&o, &r) in out.iter().zip(reference) {
        if r.abs() < 0.05 {
            previous = None;
            continue;
        }
        let gain = o / r;
        if let Some(p) = previous {
            largest = largest.max((gain - p).abs());
        }
        previous = Some(gain);
    }
    largest
}

/// The CLAP value of a gain parameter (-60..+6 dB, nice-plug's gain skew) at `db`: nice-plug
/// reports continuous parameters normalised to 0..1.
fn gain_clap_value(db: f64) -> f64 {
    let gain = |db: f64| 10f64.powf(db / 20.0);
    let (min, max) = (gain(-60.0), gain(6.0));
    let factor = 0.5f64.ln() / ((gain(-27.0) - min) / (max - min)).ln();
    ((gain(db) - min) / (max - min)).powf(factor)
}

/// "Stem level" automated from 0 to -24 dB within one block, then "Mute stem" and "Stem only"
/// switched: the gains glide (no step a smoother or a 10 ms fade would not make).
pub(crate) fn automation_and_switches_do_not_click(a: &mut Plugin, wav: &Audio, anchor: i64) {
    let rate = a.rate;
    let minus_24_db = 10f64.powf(-24.0 / 20.0);
    let take_at = |start: i64, n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| wav.channels[0][(start - anchor) as usize + i])
            .collect()
    };
    let start = anchor + seconds(0.5, rate) as i64;
    let n = seconds(0.2, rate);
    let out = a.render(
        Span::playing(start, n)
            .blocks(&[4096])
            .changes(&[("Stem only", ON), ("Stem level", gain_clap_value(-24.0))]),
    );
    let take = take_at(start, n);
    let step = largest_gain_step(&out.left, &take);
    assert!(
        step < 0.01,
        "the stem level stepped by {step} in one sample"
    );
    // Over the last 50 ms (long after the 20 ms glide): the level asked for.
    let tail = n - seconds(0.05, rate);
    let energy = |x: &[f32]| x.iter().map(|v| (v * v) as f64).sum::<f64>();
    let settled = (energy(&out.left[tail..]) / energy(&take[tail..])).sqrt();
    assert!(
        (settled - minus_24_db).abs() < 0.005,
        "{settled} for {minus_24_db}"
    );

    let start = start + n as i64;
    let out = a.render(Span::playing(start, n).changes(&[("Mute stem", ON)]));
    let take = take_at(start, n);
    let step = largest_gain_step(&out.left, &take);
    assert!(step < 0.01, "muting stepped by {step} in one sample");
    let after_fade = seconds(0.02, rate);
    assert!(out.left[after_fade..].iter().all(|&s| s == 0.0), "muted");

    // "Stem only" off fades the input in: a constant input shows the fade's shape.
    let start = start + n as i64;
    let out = a.render(
        Span::playing(start, n)
            .input(Input::Music)
            .changes(&[("Stem only", OFF)]),
    );
    let input: Vec<f32> = (0..n)
        .map(|i| Input::Music.frame(start + i as i64, rate).0)
        .collect();
    let step = largest_gain_step(&out.left, &input);
    assert!(step < 0.01, "\"Stem only\" stepped by {step} in one sample");
    a.render(
        Span::playing(start + n as i64, 512)
            .changes(&[("Mute stem", OFF), ("Stem level", gain_clap_value(0.0))]),
    );
}

/// The plug-in's threads running in this process.
fn plugin_threads() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
            let name = name.trim().to_string();
            if name.starts_with("stemgen-") {
                names.push(name);
            }
        }
    }
    names
}

/// An instance removed mid-generation, then the last instance: no plug-in thread is left
/// (the host may unload the library), and a new instance starts them again and generates.
pub(crate) fn the_last_instance_takes_the_worker_threads_with_it() {
    let rate = 48_000.0;
    let mut idle = Plugin::new();
    idle.activate(rate, 1024);
    let mut busy = Plugin::new();
    busy.activate(rate, 4096);
    busy.render(
        Span::playing(0, at_beat(40.0, rate) as usize)
            .input(Input::Music)
            .changes(&[
                ("Capture length", CUSTOM_LENGTH),
                ("Custom bars", custom_bars(8)),
                ("Quality", PAPER),
                ("Capture", ON),
            ]),
    );
    let mut position = at_beat(40.0, rate);
    // The take id is counted before the job reaches the pool, which starts its threads on
    // first use: wait for the threads themselves (Linux keeps 15 characters of a name).
    busy.wait_for("generation threads started", GENERATION_TIMEOUT, |p| {
        p.render(Span::playing(position, 4096).changes(&[("Capture", OFF)]));
        position += 4096;
        let running = plugin_threads();
        (p.session()["next_take_id"] == 1
            && running.iter().any(|t| t.starts_with("stemgen-gen"))
            && running.iter().any(|t| t.starts_with("stemgen-compute")))
        .then_some(())
    });
    drop(busy);
    drop(idle);
    let left = plugin_threads();
    assert!(left.is_empty(), "still running: {left:?}");

    let mut again = Plugin::new();
    again.activate(rate, 1024);
    again.render(
        Span::playing(0, at_beat(6.0, rate) as usize)
            .input(Input::Music)
            .changes(&[
                ("Custom bars", custom_bars(1)),
                ("Capture length", CUSTOM_LENGTH),
                ("Quality", DRAFT),
                ("Capture", ON),
            ]),
    );
    let mut position = at_beat(6.0, rate);
    wait_for_takes(&mut again, 1, |p| {
        p.render(Span::playing(position, 4096).changes(&[("Capture", OFF)]));
        position += 4096;
    });
}

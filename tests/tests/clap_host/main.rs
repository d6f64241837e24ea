//! StemGen loaded from its CLAP bundle by a headless host built on `clack-host`, and driven the
//! way a DAW drives it: main-thread calls on the test's thread, `process` on a separate audio
//! thread with the transport sent every block, parameter changes as CLAP events, main-thread
//! callbacks serviced when the plugin asks for them, and the plugin state saved and restored
//! through the state extension.
//!
//! The bundle is the debug build of `cargo xtask bundle stemgen-plugin`: its
//! `assert_process_allocs` feature aborts this whole test binary if `process` ever allocates.
//! Generation uses a tiny random model (`STEMGEN_MODEL_DIR`), so a take takes seconds.
//!
//! Files: `fixture.rs` (the bundle, the tiny model, the takes folder), `host.rs` (one plugin
//! instance and the host around it), `render.rs` (transport, inputs, block rendering),
//! `state.rs` (saved states and takes), `scenarios.rs` (scenarios 1 to 4); the tests here
//! run them.

mod bench;
mod drag_out;
mod fixture;
mod host;
mod producer;
mod render;
mod scenarios;
mod screenshot;
mod state;
mod takes_loop;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use host::Plugin;
use render::{at_beat, seconds, Input, Span};
use scenarios::{
    a_state_loaded_while_running_brings_its_take, any_rate_and_block_size_with_garbage_input,
    capture_starts_at_the_next_bar_and_becomes_a_take,
    parameters_are_reported_as_nice_plug_maps_them, the_state_restores_the_take_at_another_rate,
    the_take_plays_in_time_with_the_timeline,
};
use state::{takes, wait_for_takes};

/// The tests run one at a time: the worker-thread test needs every other instance gone.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host's song: 120 BPM in 4/4 from the start.
pub(crate) const TEMPO: f64 = 120.0;
pub(crate) const BEATS_PER_BAR: f64 = 4.0;
/// Written into the output buffers before every block: a sample the plugin leaves unwritten
/// shows up as this value (real hosts hand plugins dirty buffers too).
pub(crate) const SENTINEL: f32 = 1000.0;
/// Longest wait for a generation with the tiny model (generous: the machine may be busy).
pub(crate) const GENERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a take to be (re)loaded for playback.
pub(crate) const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

// CLAP values of the parameters set here. nice-plug reports every parameter as a CLAP range
// `0..=step_count`: the variant index for enums, `value - min` for ints, 0/1 for bools (checked
// against the plugin's parameter info in `parameters_are_reported_as_nice_plug_maps_them`).
pub(crate) const ON: f64 = 1.0;
pub(crate) const OFF: f64 = 0.0;
/// "Capture length": 4 bars, 8 bars, 16 bars, Custom.
pub(crate) const CUSTOM_LENGTH: f64 = 3.0;
/// "Quality": Draft, Normal, Paper.
pub(crate) const DRAFT: f64 = 0.0;
pub(crate) const PAPER: f64 = 2.0;

/// "Custom bars" (1..=32) as a CLAP value.
pub(crate) fn custom_bars(bars: u32) -> f64 {
    f64::from(bars - 1)
}

/// Scenarios 1 to 4 on one project: capture, generate, play in time, save and reopen, then
/// every rate and block size.
#[test]
fn capture_generate_play_restore_in_a_clap_host() {
    let _serial = serial();
    let mut a = Plugin::new();
    parameters_are_reported_as_nice_plug_maps_them(&mut a);
    a.activate(48_000.0, 4096);
    let (_take, wav) = capture_starts_at_the_next_bar_and_becomes_a_take(&mut a);
    the_take_plays_in_time_with_the_timeline(&mut a, &wav);
    let state = a.save_state();
    the_state_restores_the_take_at_another_rate(&state, &wav);
    a_state_loaded_while_running_brings_its_take(&state, &wav);
    any_rate_and_block_size_with_garbage_input(&mut a, &wav);
    a.activate(48_000.0, 4096);
    a.wait_until_take_plays(at_beat(4.0, 48_000.0));
    producer::automation_and_switches_do_not_click(&mut a, &wav, at_beat(4.0, 48_000.0));
}

/// The producer's chords and key: in the session, in the take's sidecar, after a reopen.
#[test]
fn harmony_settings_reach_the_take_and_survive_a_reopen() {
    let _serial = serial();
    producer::harmony_settings_reach_the_take_and_survive_a_reopen();
}

/// A preview heard before the take, bars re-generated, a take added to the context.
#[test]
fn preview_region_and_stem_by_stem() {
    let _serial = serial();
    takes_loop::preview_region_and_stem_by_stem();
}

/// The editor with two takes as a PNG (`cargo xtask screenshot`, which starts a virtual X
/// display and names the file in `STEMGEN_SCREENSHOT`).
#[test]
#[ignore = "needs an X display; run through `cargo xtask screenshot`"]
fn editor_screenshot() {
    let _serial = serial();
    let out = std::env::var_os("STEMGEN_SCREENSHOT").expect("STEMGEN_SCREENSHOT names the PNG");
    screenshot::editor_screenshot(std::path::Path::new(&out));
}

/// Takes dragged out of the editor onto a drop target (needs an X display with XTEST:
/// `cargo xtask drag-test` starts Xvfb).
#[test]
#[ignore = "needs an X display; run through `cargo xtask drag-test`"]
fn editor_drag_out() {
    let _serial = serial();
    drag_out::editor_drag_out();
}

/// The cost of a block of subnormal input against normal input (`cargo xtask bench-process`,
/// on the release bundle).
#[test]
#[ignore = "a benchmark; run through `cargo xtask bench-process`"]
fn process_cost_of_denormal_input() {
    let _serial = serial();
    bench::process_cost_of_denormal_input();
}

/// Removing instances stops the plug-in's threads; a new instance starts them again.
#[test]
fn the_last_instance_takes_the_worker_threads_with_it() {
    let _serial = serial();
    producer::the_last_instance_takes_the_worker_threads_with_it();
}

/// Scenario 5: Capture with nothing to capture (stopped with no history, or playing silence)
/// neither crashes nor adds a take; an instance removed mid-generation is harmless; "the last
/// bars heard" while stopped does make a take.
#[test]
fn captures_of_nothing_add_no_take() {
    let _serial = serial();
    let rate = 48_000.0;
    let one_bar_draft = &[
        ("Capture length", CUSTOM_LENGTH),
        ("Custom bars", custom_bars(1)),
        ("Quality", DRAFT),
    ];
    let press = &[("Capture", ON)];
    let release = &[("Capture", OFF)];

    let mut c = Plugin::new();
    c.activate(rate, 1024);
    // Stopped and nothing heard yet: "the last bars heard" has nothing to take.
    c.render(Span::stopped(0, 1024).changes(one_bar_draft));
    c.render(Span::stopped(0, seconds(0.5, rate)).changes(press));
    c.render(Span::stopped(0, 1024).changes(release));
    let session = c.session();
    assert!(takes(&session).is_empty(), "{session}");
    assert_eq!(
        session["next_take_id"], 0,
        "no generation started: {session}"
    );

    // Playing silence: the bar capture completes, its generation must fail without a take.
    c.render(Span::playing(0, seconds(2.25, rate)).changes(press));
    c.render(Span::playing(seconds(2.25, rate) as i64, 1024).changes(release));
    let session = c.session();
    assert_eq!(
        session["next_take_id"], 1,
        "the silent capture reached the generator: {session}"
    );

    // An instance removed while its (long) generation runs: nothing crashes or stalls, and
    // the process's one worker goes on to serve the next instance (`d` below).
    let mut f = Plugin::new();
    f.activate(rate, 4096);
    f.render(
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
    f.wait_for("generation started", GENERATION_TIMEOUT, |f| {
        f.render(Span::playing(position, 4096).changes(release));
        position += 4096;
        (f.session()["next_take_id"] == 1).then_some(())
    });
    drop(f);

    // The plugin's generation worker runs jobs in order: once a later job's take exists, the
    // earlier ones have finished. That job captures the last bar heard after the song stopped.
    let mut d = Plugin::new();
    d.activate(rate, 1024);
    let stop = at_beat(6.0, rate);
    d.render(
        Span::playing(0, stop as usize)
            .input(Input::Music)
            .changes(one_bar_draft),
    );
    d.render(Span::stopped(stop, 4096).changes(press));
    d.render(Span::stopped(stop, 1024).changes(release));
    let session = wait_for_takes(&mut d, 1, |d| {
        d.render(Span::stopped(stop, 1024));
    });
    let take = &takes(&session)[0];
    // Counted on from CLAP's fixed-point beat positions (2^-31 beat steps): close, not exact.
    let start_beats = take["anchor"]["start_beats"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (start_beats - 2.0).abs() < 1e-6,
        "the bar before beat 6: {take}"
    );
    assert_eq!(
        take["anchor"]["start_samples"],
        at_beat(2.0, rate),
        "{take}"
    );
    assert_eq!(take["bars"], 1.0, "{take}");

    c.render(Span::playing(0, 4096));
    let session = c.session();
    assert!(
        takes(&session).is_empty(),
        "a silent capture must not make a take: {session}"
    );
    let out = c.render(Span::playing(0, 4096).input(Input::Garbage));
    assert!(out.samples().all(f32::is_finite));
}

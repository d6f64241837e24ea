//! The editor on an X display with two takes (waveforms over their context, the host's bar
//! numbers, bars selected for re-generation, a take in the context, the playhead), embedded in
//! a window at the root's top-left corner the way a Linux host embeds it:
//! `cargo xtask screenshot` saves it as a PNG, `cargo xtask drag-test` drags takes out of it.
//! Needs an X display; the xtask runs both under Xvfb.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt, CreateWindowAux, ImageFormat, Window, WindowClass};
use x11rb::rust_connection::RustConnection;

use crate::host::Plugin;
use crate::render::{at_beat, Input, Span};
use crate::state::{takes, wait_for_takes, with_session};
use crate::{custom_bars, CUSTOM_LENGTH, DRAFT, GENERATION_TIMEOUT, OFF, ON};

const WIDTH: u16 = 920;
const HEIGHT: u16 = 680;
const RATE: f64 = 48_000.0;

/// The plug-in with its editor open in `window` (at the root's (0, 0)), and the session.
pub(crate) struct EditorScene {
    pub plugin: Plugin,
    pub conn: RustConnection,
    pub window: Window,
    /// Take 1 (in the context of take 2) and take 2 (bar 2 of its two selected), 2 bars each
    /// from the host's bar 2, at 120 BPM, 48 kHz.
    pub session: Value,
}

pub(crate) fn editor_with_two_takes() -> EditorScene {
    let rate = RATE;
    let mut a = Plugin::new();
    a.activate(rate, 1024);
    a.render(Span::playing(0, 1024));
    // Take 1: two bars captured from beat 4 and generated at once.
    a.render(
        Span::playing(
            at_beat(1.0, rate),
            (at_beat(13.0, rate) - at_beat(1.0, rate)) as usize,
        )
        .input(Input::Music)
        .changes(&[
            ("Capture length", CUSTOM_LENGTH),
            ("Custom bars", custom_bars(2)),
            ("Quality", DRAFT),
            ("Capture", ON),
        ]),
    );
    let mut position = at_beat(13.0, rate);
    wait_for_takes(&mut a, 1, |a| {
        a.render(Span::playing(position, 4096).changes(&[("Capture", OFF)]));
        position += 4096;
    });
    // Take 2: another seed over the same capture and take 1 (stem by stem).
    let state = with_session(&a.save_state(), |s| {
        s["seed"] = 7.into();
        s["context_takes"] = serde_json::json!([1]);
    });
    a.load_state(&state);
    a.render(Span::stopped(0, 64).changes(&[("Generate", ON)]));
    a.render(Span::stopped(0, 64).changes(&[("Generate", OFF)]));
    let session = a.wait_for("second take", GENERATION_TIMEOUT, |p| {
        p.render(Span::stopped(0, 64));
        let session = p.session();
        (takes(&session).len() >= 2).then_some(session)
    });
    // Bar 2 of take 2 selected for re-generation.
    let second = takes(&session)[1]["id"].clone();
    let state = with_session(&a.save_state(), |s| {
        s["region"] = serde_json::json!({"take": second, "first": 1, "count": 1});
    });
    a.load_state(&state);

    let (conn, screen) = x11rb::connect(None)
        .expect("no X display: run this through `cargo xtask screenshot` (it starts Xvfb)");
    let root = conn.setup().roots[screen].root;
    let window = conn.generate_id().unwrap();
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        window,
        root,
        0,
        0,
        WIDTH,
        HEIGHT,
        0,
        WindowClass::INPUT_OUTPUT,
        x11rb::COPY_FROM_PARENT,
        &CreateWindowAux::new(),
    )
    .unwrap();
    conn.map_window(window).unwrap();
    conn.flush().unwrap();
    a.open_editor(window);
    EditorScene {
        plugin: a,
        conn,
        window,
        session,
    }
}

pub(crate) fn editor_screenshot(out: &Path) {
    let EditorScene {
        plugin: mut a,
        conn,
        window,
        ..
    } = editor_with_two_takes();
    let rate = RATE;
    // Play the take's bars so the playhead moves; the editor repaints about 30 times a second.
    let anchor = at_beat(4.0, rate);
    let started = Instant::now();
    let mut offset = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let pos = anchor + offset;
        a.render(Span::playing(pos, 2400).changes(&[("Stem only", ON)]));
        offset = (offset + 2400) % at_beat(8.0, rate);
        std::thread::sleep(Duration::from_millis(50));
    }
    let image = conn
        .get_image(ImageFormat::Z_PIXMAP, window, 0, 0, WIDTH, HEIGHT, !0)
        .unwrap()
        .reply()
        .expect("cannot read the window's pixels");
    a.close_editor();
    write_png(out, &image.data, image.depth);
    println!("wrote {}", out.display());
}

/// 24/32-bit little-endian BGRX pixels (what Xvfb's default visual gives) as an RGB PNG.
fn write_png(out: &Path, bgrx: &[u8], depth: u8) {
    assert!(
        depth == 24 || depth == 32,
        "the display's depth is {depth}; start Xvfb with a 24-bit screen"
    );
    let rgb: Vec<u8> = bgrx
        .chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    let file = std::fs::File::create(out)
        .unwrap_or_else(|e| panic!("{}: cannot write the screenshot: {e}", out.display()));
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), WIDTH.into(), HEIGHT.into());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&rgb).unwrap();
}

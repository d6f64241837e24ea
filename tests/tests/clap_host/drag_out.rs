//! `cargo xtask drag-test`: takes dragged out of the editor onto another application's
//! window, on a real X server. The drop target is an `XdndAware` window that fetches
//! `text/uri-list` on drop, as file managers and DAWs do; the pointer is moved and its button
//! pressed through XTEST, on the editor's "Drag out" buttons.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use stemgen::audio::read_audio;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ClientMessageEvent, ConnectionExt as _, CreateWindowAux, EventMask, PropMode, Window,
    WindowClass, BUTTON_PRESS_EVENT, BUTTON_RELEASE_EVENT, MOTION_NOTIFY_EVENT,
};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;
use x11rb::{COPY_DEPTH_FROM_PARENT, CURRENT_TIME};

use crate::render::Span;
use crate::screenshot::{editor_with_two_takes, EditorScene};
use crate::state::{takes, with_session};

x11rb::atom_manager! {
    Atoms: AtomsCookie {
        XdndAware,
        XdndEnter,
        XdndPosition,
        XdndStatus,
        XdndDrop,
        XdndFinished,
        XdndSelection,
        XdndActionCopy,
        TEXT_URI_LIST: b"text/uri-list",
        STEMGEN_TEST_DROP,
    }
}

/// Where the editor (920 x 680 at the root's (0, 0), see `screenshot.rs`) draws the "Drag out"
/// button of the newest take, the first row of the takes list. If the layout changes,
/// `cargo xtask screenshot` shows where it went.
const DRAG_OUT_NEWEST: (i16, i16) = (668, 232);

/// A window that takes drops of `text/uri-list` and remembers what it got.
struct DropTarget {
    conn: RustConnection,
    root: Window,
    window: Window,
    x: i16,
    y: i16,
    atoms: Atoms,
    property: u32,
    source: Option<Window>,
    entered: bool,
    dropped: Option<String>,
}

impl DropTarget {
    /// Maps the target at `x, y` (root coordinates), `size` pixels square.
    fn open(x: i16, y: i16, size: u16) -> Self {
        let (conn, screen) = x11rb::connect(None).expect("an X display (run under xvfb-run)");
        let root = conn.setup().roots[screen].root;
        let atoms = Atoms::new(&conn).unwrap().reply().unwrap();
        let property = atoms.STEMGEN_TEST_DROP;
        let window = conn.generate_id().unwrap();
        conn.create_window(
            COPY_DEPTH_FROM_PARENT,
            window,
            root,
            x,
            y,
            size,
            size,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new()
                .override_redirect(1)
                .event_mask(EventMask::PROPERTY_CHANGE),
        )
        .unwrap();
        conn.change_property32(
            PropMode::REPLACE,
            window,
            atoms.XdndAware,
            AtomEnum::ATOM,
            &[5],
        )
        .unwrap();
        conn.map_window(window).unwrap();
        conn.sync().unwrap();
        Self {
            conn,
            root,
            window,
            x,
            y,
            atoms,
            property,
            source: None,
            entered: false,
            dropped: None,
        }
    }

    fn fake(&self, kind: u8, detail: u8, x: i16, y: i16) {
        self.conn
            .xtest_fake_input(kind, detail, CURRENT_TIME, self.root, x, y, 0)
            .unwrap();
        self.conn.sync().unwrap();
    }

    /// Handles the protocol's messages for `duration`, keeping the plug-in's main thread
    /// serviced (the editor runs on a thread of its own).
    fn pump(&mut self, scene: &mut EditorScene, duration: Duration) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            while let Some(event) = self.conn.poll_for_event().unwrap() {
                self.handle(event);
            }
            scene.plugin.render(Span::stopped(0, 64));
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Presses on `from`, moves in steps onto this target, releases; returns the URI list
    /// the target received, if any.
    fn drag_from(&mut self, scene: &mut EditorScene, from: (i16, i16)) -> Option<String> {
        self.drag(scene, from, (self.x + 50, self.y + 50))
    }

    fn drag(
        &mut self,
        scene: &mut EditorScene,
        from: (i16, i16),
        to: (i16, i16),
    ) -> Option<String> {
        self.dropped = None;
        self.fake(MOTION_NOTIFY_EVENT, 0, from.0, from.1);
        self.pump(scene, Duration::from_millis(100));
        self.fake(BUTTON_PRESS_EVENT, 1, 0, 0);
        self.pump(scene, Duration::from_millis(60));
        // A hand starts slowly: the editor decides it is a drag while the pointer is still on
        // the button, then it travels to the target.
        let start = (from.0 + 8, from.1 + 2);
        self.fake(MOTION_NOTIFY_EVENT, 0, start.0, start.1);
        self.pump(scene, Duration::from_millis(60));
        for step in 1..=8 {
            let along = |a: i16, b: i16| a + ((b - a) as i32 * step / 8) as i16;
            self.fake(
                MOTION_NOTIFY_EVENT,
                0,
                along(start.0, to.0),
                along(start.1, to.1),
            );
            self.pump(scene, Duration::from_millis(60));
        }
        self.pump(scene, Duration::from_millis(200));
        self.fake(BUTTON_RELEASE_EVENT, 1, 0, 0);
        let end = Instant::now() + Duration::from_secs(5);
        while self.dropped.is_none() && Instant::now() < end {
            self.pump(scene, Duration::from_millis(20));
        }
        self.pump(scene, Duration::from_millis(100));
        self.dropped.take()
    }

    fn handle(&mut self, event: Event) {
        let a = self.atoms;
        match event {
            Event::ClientMessage(m) => {
                let data = m.data.as_data32();
                if m.type_ == a.XdndEnter {
                    self.source = Some(data[0]);
                    self.entered = true;
                    let offered = [data[2], data[3], data[4]];
                    assert!(offered.contains(&a.TEXT_URI_LIST), "text/uri-list offered");
                } else if m.type_ == a.XdndPosition {
                    // Accept, copy.
                    self.reply(a.XdndStatus, [self.window, 1, 0, 0, a.XdndActionCopy]);
                } else if m.type_ == a.XdndDrop {
                    self.conn
                        .convert_selection(
                            self.window,
                            a.XdndSelection,
                            a.TEXT_URI_LIST,
                            self.property,
                            data[2],
                        )
                        .unwrap();
                    self.conn.flush().unwrap();
                }
            }
            Event::SelectionNotify(n) if n.property == self.property => {
                let value = self
                    .conn
                    .get_property(true, self.window, self.property, AtomEnum::ANY, 0, 1 << 16)
                    .unwrap()
                    .reply()
                    .unwrap();
                assert_eq!(value.type_, a.TEXT_URI_LIST);
                self.dropped = Some(String::from_utf8(value.value).unwrap());
                self.reply(a.XdndFinished, [self.window, 1, a.XdndActionCopy, 0, 0]);
            }
            _ => {}
        }
    }

    fn reply(&self, kind: u32, data: [u32; 5]) {
        let source = self.source.expect("XdndEnter came first");
        let event = ClientMessageEvent::new(32, source, kind, data);
        self.conn
            .send_event(false, source, EventMask::NO_EVENT, event)
            .unwrap();
        self.conn.flush().unwrap();
    }
}

/// The file of a one-line URI list (the takes folder's paths need no percent-encoding).
fn path_of(uris: &str) -> PathBuf {
    let path = uris.strip_suffix("\r\n").expect("one CRLF-terminated line");
    PathBuf::from(path.strip_prefix("file://").expect("a file URI"))
}

fn take_path(session: &Value, index: usize) -> PathBuf {
    PathBuf::from(takes(session)[index]["path"].as_str().unwrap())
}

pub(crate) fn editor_drag_out() {
    let mut scene = editor_with_two_takes();
    let mut target = DropTarget::open(950, 300, 200);
    // The editor lays itself out in its first frames.
    target.pump(&mut scene, Duration::from_secs(1));

    // Take 2 with its bar 2 (the host's bar 3) selected: a trimmed copy of exactly that bar.
    let uris = target.drag_from(&mut scene, DRAG_OUT_NEWEST);
    assert!(target.entered, "the drag never entered the target");
    let uris = uris.expect("no URI list reached the target");
    let copy = path_of(&uris);
    assert!(copy.to_string_lossy().ends_with("-bars-3-3.wav"), "{uris}");
    let take_2 = take_path(&scene.session, 1);
    let take = read_audio(&take_2).unwrap();
    let bar = read_audio(&copy).unwrap();
    assert_eq!(bar.sample_rate, take.sample_rate);
    let bar_frames = 2 * take.sample_rate as usize; // 4 beats at 120 BPM
    for (got, all) in bar.channels.iter().zip(&take.channels) {
        assert_eq!(got[..], all[bar_frames..2 * bar_frames]);
    }
    println!("take 2's bar 3 dropped as {uris:?}");

    // The selection cleared: the take's own file.
    let state = with_session(&scene.plugin.save_state(), |s| s["region"] = Value::Null);
    scene.plugin.load_state(&state);
    let uris = target
        .drag_from(&mut scene, DRAG_OUT_NEWEST)
        .expect("no URI list reached the target");
    assert_eq!(path_of(&uris), take_2);
    println!("take 2 dropped as {uris:?}");

    // Released over the bare root window: nothing is delivered anywhere.
    let nothing = target.drag(&mut scene, DRAG_OUT_NEWEST, (1200, 900));
    assert_eq!(nothing, None);
    scene.plugin.close_editor();
    assert!(Path::new(&take_2).is_file() && copy.is_file());
}

//! Dragging a take out of the editor as a file, on X11: the source side of the XDND protocol
//! (version 5), offering the file as `text/uri-list`.
//!
//! Decisions:
//! - **A connection and a thread of its own.** The editor's window belongs to the GUI toolkit
//!   the plug-in is built on, which does not speak XDND. A drag opens its own X connection,
//!   owns `XdndSelection` with a small input-only window, and runs until the drop is finished.
//!   The thread is owned by [`DragOut`]: dropping it cancels the drag and joins the thread, so
//!   nothing of a drag outlives the editor that started it.
//! - **The pointer is followed by polling, not grabbed.** The drag starts while the mouse
//!   button that began it is held on the editor's window, and the X server gives that press's
//!   implicit grab to the editor's connection, so a second connection cannot grab the pointer.
//!   Every [`POLL`] the thread asks where the pointer is and whether the button is still down;
//!   the window under it that advertises `XdndAware` is the drop target. (Escape cannot cancel:
//!   keys go to the editor. Releasing over a window that refuses is the way out.)
//! - `x11rb` (pure Rust, no libxcb needed) does the protocol plumbing; what is written here is
//!   the XDND state machine, which no maintained crate offers as a source.
//! - `XdndProxy` (used by a few desktop root windows) is not followed: drops onto the desktop
//!   itself are not offered.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ClientMessageEvent, ConnectionExt as _, CreateWindowAux, EventMask, KeyButMask,
    PropMode, SelectionNotifyEvent, SelectionRequestEvent, Window, WindowClass,
    SELECTION_NOTIFY_EVENT,
};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;
use x11rb::{CURRENT_TIME, NONE};

/// How often the drag looks at the pointer.
const POLL: Duration = Duration::from_millis(10);
/// How long a target may take to answer a position before the release counts as refused.
const STATUS_WAIT: Duration = Duration::from_millis(500);
/// How long a target may take to fetch the file list and finish after the drop.
const FINISH_WAIT: Duration = Duration::from_secs(5);
/// The protocol version this source speaks.
const XDND_VERSION: u32 = 5;

x11rb::atom_manager! {
    /// The atoms of the XDND protocol and the selection formats offered.
    pub Atoms: AtomsCookie {
        XdndAware,
        XdndEnter,
        XdndPosition,
        XdndStatus,
        XdndLeave,
        XdndDrop,
        XdndFinished,
        XdndSelection,
        XdndActionCopy,
        XdndTypeList,
        TARGETS,
        UTF8_STRING,
        TEXT_URI_LIST: b"text/uri-list",
        TEXT_PLAIN: b"text/plain",
    }
}

/// How a drag ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DragOutcome {
    /// Released over `target`, which took the files (`accepted`: it said it copied them).
    Dropped { target: u32, accepted: bool },
    /// Released over a window that does not take drops (or over none).
    NoTarget,
    /// Released over a drop target that refused the files.
    Refused,
    /// The editor closed during the drag.
    Cancelled,
}

/// A drag in progress. Dropping it cancels the drag and joins its thread.
pub struct DragOut {
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<DragOutcome>>>,
}

impl DragOut {
    /// Starts dragging `files` (which must exist: they are written before the drag starts)
    /// from where the pointer is now. Fails at once if there is no X display.
    pub fn start(files: &[PathBuf]) -> Result<Self> {
        for file in files {
            if !file.is_file() {
                bail!("{}: the file to drag is missing", file.display());
            }
        }
        let uri_list = uri_list(files)?;
        let (conn, screen) = x11rb::connect(None)
            .context("dragging needs an X11 display (use Copy path or Reveal instead)")?;
        let root = conn.setup().roots[screen].root;
        let atoms = Atoms::new(&conn)?.reply()?;
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("stemgen-drag".into())
            .spawn(move || {
                let source = Source::new(conn, root, atoms, uri_list)?;
                source.run(&flag)
            })
            .context("cannot start the drag thread")?;
        Ok(Self {
            cancel,
            thread: Some(thread),
        })
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the drag to end and says how it ended.
    pub fn finish(mut self) -> Result<DragOutcome> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => bail!("the drag thread panicked"),
            None => Ok(DragOutcome::Cancelled),
        }
    }
}

impl Drop for DragOut {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `file:///...` lines (RFC 2483: CRLF-terminated), each path absolute and percent-encoded.
pub fn uri_list(files: &[PathBuf]) -> Result<String> {
    let mut list = String::new();
    for file in files {
        list.push_str(&file_uri(file)?);
        list.push_str("\r\n");
    }
    Ok(list)
}

/// Bytes kept as they are in a file URI's path: unreserved characters and the separators.
const PATH_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The `file://` URI of `path` (made absolute).
pub fn file_uri(path: &Path) -> Result<String> {
    use std::os::unix::ffi::OsStrExt;
    let absolute = std::path::absolute(path)
        .with_context(|| format!("{}: cannot make the path absolute", path.display()))?;
    let encoded = percent_encode(absolute.as_os_str().as_bytes(), PATH_KEEP);
    Ok(format!("file://{encoded}"))
}

/// The source's side of one drag.
struct Source {
    conn: RustConnection,
    root: Window,
    atoms: Atoms,
    window: Window,
    uri_list: String,
}

/// The drop target under the pointer and what it said so far.
struct Target {
    window: Window,
    /// A position was sent and its status has not come back.
    awaiting_status: bool,
    accepted: bool,
    last_position: Option<(i16, i16)>,
}

impl Source {
    fn new(conn: RustConnection, root: Window, atoms: Atoms, uri_list: String) -> Result<Self> {
        let window = conn.generate_id()?;
        conn.create_window(
            0,
            window,
            root,
            -10,
            -10,
            1,
            1,
            0,
            WindowClass::INPUT_ONLY,
            0,
            &CreateWindowAux::new(),
        )?;
        conn.change_property32(
            PropMode::REPLACE,
            window,
            atoms.XdndTypeList,
            AtomEnum::ATOM,
            &[atoms.TEXT_URI_LIST, atoms.TEXT_PLAIN],
        )?;
        conn.set_selection_owner(window, atoms.XdndSelection, CURRENT_TIME)?;
        conn.flush()?;
        Ok(Self {
            conn,
            root,
            atoms,
            window,
            uri_list,
        })
    }

    fn run(self, cancel: &AtomicBool) -> Result<DragOutcome> {
        let outcome = self.follow_pointer(cancel);
        let _ = self.conn.destroy_window(self.window);
        let _ = self.conn.flush();
        outcome
    }

    fn follow_pointer(&self, cancel: &AtomicBool) -> Result<DragOutcome> {
        let mut target: Option<Target> = None;
        let mut released_at: Option<Instant> = None;
        loop {
            if cancel.load(Ordering::Relaxed) {
                if let Some(t) = &target {
                    self.send(t.window, self.atoms.XdndLeave, [self.window, 0, 0, 0, 0])?;
                }
                return Ok(DragOutcome::Cancelled);
            }
            while let Some(event) = self.conn.poll_for_event()? {
                match event {
                    Event::ClientMessage(m) if m.type_ == self.atoms.XdndStatus => {
                        let data = m.data.as_data32();
                        if let Some(t) = target.as_mut().filter(|t| t.window == data[0]) {
                            t.awaiting_status = false;
                            t.accepted = data[1] & 1 == 1;
                        }
                    }
                    Event::SelectionRequest(request) => self.answer(&request)?,
                    _ => {}
                }
            }
            let pointer = self.conn.query_pointer(self.root)?.reply()?;
            let held = pointer.mask.contains(KeyButMask::BUTTON1);
            if held {
                let under = self.aware_window_under_pointer()?;
                if under.map(|(w, _)| w) != target.as_ref().map(|t| t.window) {
                    if let Some(t) = target.take() {
                        self.send(t.window, self.atoms.XdndLeave, [self.window, 0, 0, 0, 0])?;
                    }
                    if let Some((window, version)) = under {
                        let types = [self.atoms.TEXT_URI_LIST, self.atoms.TEXT_PLAIN, 0];
                        let flags = version.min(XDND_VERSION) << 24;
                        let data = [self.window, flags, types[0], types[1], types[2]];
                        self.send(window, self.atoms.XdndEnter, data)?;
                        target = Some(Target {
                            window,
                            awaiting_status: false,
                            accepted: false,
                            last_position: None,
                        });
                    }
                }
                if let Some(t) = target.as_mut() {
                    let position = (pointer.root_x, pointer.root_y);
                    if !t.awaiting_status && t.last_position != Some(position) {
                        let packed = ((position.0 as u16 as u32) << 16) | position.1 as u16 as u32;
                        let data = [
                            self.window,
                            0,
                            packed,
                            CURRENT_TIME,
                            self.atoms.XdndActionCopy,
                        ];
                        self.send(t.window, self.atoms.XdndPosition, data)?;
                        t.awaiting_status = true;
                        t.last_position = Some(position);
                    }
                }
            } else {
                // Released: wait (briefly) for the answer to the last position, then drop.
                let Some(t) = target.as_ref() else {
                    return Ok(DragOutcome::NoTarget);
                };
                let since = *released_at.get_or_insert_with(Instant::now);
                if t.awaiting_status && since.elapsed() < STATUS_WAIT {
                    std::thread::sleep(POLL);
                    continue;
                }
                if !t.accepted {
                    self.send(t.window, self.atoms.XdndLeave, [self.window, 0, 0, 0, 0])?;
                    return Ok(DragOutcome::Refused);
                }
                let window = t.window;
                self.send(
                    window,
                    self.atoms.XdndDrop,
                    [self.window, 0, CURRENT_TIME, 0, 0],
                )?;
                return self.serve_until_finished(window, cancel);
            }
            std::thread::sleep(POLL);
        }
    }

    /// After the drop: answers the target's requests for the file list until it finishes.
    fn serve_until_finished(&self, target: Window, cancel: &AtomicBool) -> Result<DragOutcome> {
        let deadline = Instant::now() + FINISH_WAIT;
        while Instant::now() < deadline && !cancel.load(Ordering::Relaxed) {
            while let Some(event) = self.conn.poll_for_event()? {
                match event {
                    Event::SelectionRequest(request) => self.answer(&request)?,
                    Event::ClientMessage(m) if m.type_ == self.atoms.XdndFinished => {
                        let data = m.data.as_data32();
                        if data[0] == target {
                            return Ok(DragOutcome::Dropped {
                                target,
                                accepted: data[1] & 1 == 1,
                            });
                        }
                    }
                    _ => {}
                }
            }
            std::thread::sleep(POLL);
        }
        // Version 2-4 targets never send XdndFinished; the drop itself was delivered.
        Ok(DragOutcome::Dropped {
            target,
            accepted: false,
        })
    }

    /// Hands the file list to a target that converts `XdndSelection`.
    fn answer(&self, request: &SelectionRequestEvent) -> Result<()> {
        let a = &self.atoms;
        let property = if request.property == NONE {
            request.target
        } else {
            request.property
        };
        let text_targets = [a.TEXT_URI_LIST, a.TEXT_PLAIN, a.UTF8_STRING];
        let delivered = if request.selection != a.XdndSelection {
            false
        } else if text_targets.contains(&request.target) {
            self.conn.change_property8(
                PropMode::REPLACE,
                request.requestor,
                property,
                request.target,
                self.uri_list.as_bytes(),
            )?;
            true
        } else if request.target == a.TARGETS {
            let mut targets = vec![a.TARGETS];
            targets.extend(text_targets);
            self.conn.change_property32(
                PropMode::REPLACE,
                request.requestor,
                property,
                AtomEnum::ATOM,
                &targets,
            )?;
            true
        } else {
            false
        };
        let notify = SelectionNotifyEvent {
            response_type: SELECTION_NOTIFY_EVENT,
            sequence: 0,
            time: request.time,
            requestor: request.requestor,
            selection: request.selection,
            target: request.target,
            property: if delivered { property } else { NONE },
        };
        self.conn
            .send_event(false, request.requestor, EventMask::NO_EVENT, notify)?;
        self.conn.flush()?;
        Ok(())
    }

    /// The outermost window under the pointer that says `XdndAware` (toolkits set it on their
    /// top-level windows, below a window manager's frame), with its protocol version.
    /// A window destroyed while it is being looked at (an X error) counts as none: the next
    /// poll looks again.
    fn aware_window_under_pointer(&self) -> Result<Option<(Window, u32)>> {
        let mut window = self.root;
        loop {
            let Ok(pointer) = self.conn.query_pointer(window)?.reply() else {
                return Ok(None);
            };
            let child = pointer.child;
            if child == NONE || child == self.window {
                return Ok(None);
            }
            let property = self
                .conn
                .get_property(false, child, self.atoms.XdndAware, AtomEnum::ATOM, 0, 1)?
                .reply();
            let Ok(aware) = property else {
                return Ok(None);
            };
            if let Some(version) = aware.value32().and_then(|mut v| v.next()) {
                if version >= 3 {
                    return Ok(Some((child, version)));
                }
            }
            window = child;
        }
    }

    fn send(&self, target: Window, kind: u32, data: [u32; 5]) -> Result<()> {
        let event = ClientMessageEvent::new(32, target, kind, data);
        self.conn
            .send_event(false, target, EventMask::NO_EVENT, event)?;
        self.conn.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_are_absolute_and_percent_encoded() {
        let uri = file_uri(Path::new("/tmp/takes/take 001 bass#1.wav")).unwrap();
        assert_eq!(uri, "file:///tmp/takes/take%20001%20bass%231.wav");
        let relative = file_uri(Path::new("a.wav")).unwrap();
        assert!(relative.starts_with("file:///") && relative.ends_with("/a.wav"));
        let list = uri_list(&[PathBuf::from("/a b.wav"), PathBuf::from("/c.wav")]).unwrap();
        assert_eq!(list, "file:///a%20b.wav\r\nfile:///c.wav\r\n");
    }
}

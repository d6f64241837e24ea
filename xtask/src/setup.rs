//! The system packages the workspace needs beyond Rust, installed on demand so that a fresh
//! Debian machine with Rust and git needs nothing typed before the README's commands.
//!
//! The engine (and so the README's main job) builds from crates alone. The plugin's editor
//! links X11/XCB/GL, its standalone ALSA and JACK, and the data tests render with a small
//! General MIDI SoundFont; `pkg-config` and a C toolchain find and build those bindings.
//! On other systems nothing is installed: the list is printed so its equivalents can be.

use std::process::Command;

/// Debian packages the workspace's build and tests need.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "pkg-config",
    "build-essential",
    "libx11-dev",
    "libx11-xcb-dev",
    "libxcb1-dev",
    "libxcb-dri2-0-dev",
    "libxcb-icccm4-dev",
    "libxcursor-dev",
    "libxkbcommon-dev",
    "libxcb-shape0-dev",
    "libxcb-xfixes0-dev",
    "libgl-dev",
    "libgl1-mesa-dev",
    "libasound2-dev",
    "libjack-jackd2-dev",
    "timgm6mb-soundfont",
];

/// What `cargo xtask screenshot` and `drag-test` need besides [`DEBIAN_PACKAGES`]: a virtual
/// X display.
pub const XVFB_PACKAGES: &[&str] = &["xvfb", "xauth"];

/// Installs every missing package of [`DEBIAN_PACKAGES`] with apt-get (through `sudo` when not
/// root). Returns an error saying what to do when that is not possible.
pub fn ensure_system_packages() -> Result<(), String> {
    ensure_packages(DEBIAN_PACKAGES)
}

/// Installs every missing package of `packages` (see [`ensure_system_packages`]).
pub fn ensure_packages(packages: &[&str]) -> Result<(), String> {
    let Some(missing) = missing_debian_packages(packages) else {
        eprintln!(
            "note: not a Debian-like system (no dpkg-query); the plug-in build and the tests \
             need the equivalents of: {}",
            packages.join(" ")
        );
        return Ok(());
    };
    if missing.is_empty() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    eprintln!(
        "StemGen's plug-in build and tests need these Debian packages, which are missing: {}\n\
         Installing them with apt-get{}...",
        missing.join(" "),
        if root { "" } else { " (through sudo)" }
    );
    let apt = |args: &[&str]| -> Result<(), String> {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        let status = cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "`apt-get {}` failed ({status}); install these packages yourself: {}",
                args.join(" "),
                missing.join(" ")
            ))
        }
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(missing.iter().map(String::as_str));
    apt(&install)
}

/// The packages of `packages` that dpkg does not list as installed; `None` without dpkg.
fn missing_debian_packages(packages: &[&str]) -> Option<Vec<String>> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
        .args(packages)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(name, _)| name.split(':').next().unwrap_or(name))
        .collect();
    Some(
        packages
            .iter()
            .filter(|p| !installed.contains(p))
            .map(|p| p.to_string())
            .collect(),
    )
}

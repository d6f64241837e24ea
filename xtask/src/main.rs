//! Project chores run as `cargo xtask ...`:
//! - `cargo xtask test [ARGS]`: the README's test command. Installs the Debian packages the
//!   workspace's build and tests need when any is missing (see [`setup`]), then runs
//!   `cargo test --workspace ARGS`.
//! - `cargo xtask bundle <package> [--release]`: builds the plugin and lays out the `.vst3`
//!   and `.clap` bundles under `target/bundled/` (nice-plug-xtask does the platform specifics).
//! - `cargo xtask install [--system]` / `cargo xtask uninstall [--system]`: the release
//!   plug-in and the default model where hosts and the plug-in look (see [`install`]).
//! - `cargo xtask bench-process`: the cost of a `process()` block with subnormal input next to
//!   normal input, on the release plug-in in the CLAP test host.
//! - `cargo xtask screenshot [FILE.png]`: the editor with two takes, embedded in a window on a
//!   virtual X display (Xvfb), saved as a PNG (default `target/screenshots/editor.png`).
//! - `cargo xtask drag-test`: takes dragged out of the editor onto a test drop target on a
//!   virtual X display (XDND; the pointer moved and clicked through XTEST).

mod install;
mod setup;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => run_tests(&args[1..]),
        Some("screenshot") => screenshot(args.get(1).map(String::as_str)),
        Some("drag-test") => drag_test(),
        Some("bench-process") => bench_process(),
        Some(cmd @ ("install" | "uninstall")) => {
            let system = match &args[1..] {
                [] => false,
                [flag] if flag == "--system" => true,
                other => {
                    eprintln!("error: unexpected arguments {other:?} (only --system)");
                    return ExitCode::FAILURE;
                }
            };
            let workspace = workspace();
            let result = if cmd == "install" {
                setup::ensure_system_packages().and_then(|()| install::install(&workspace, system))
            } else {
                install::uninstall(system)
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => match nice_plug_xtask::main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Installs what is missing, then runs the workspace's tests with `extra` passed to cargo.
fn run_tests(extra: &[String]) -> ExitCode {
    if let Err(e) = setup::ensure_system_packages() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["test", "--workspace"])
        .args(extra)
        .status();
    exit_code(status, "cargo")
}

/// Runs the CLAP host's screenshot scenario on a virtual display.
fn screenshot(out: Option<&str>) -> ExitCode {
    let workspace = workspace();
    let out = out.map_or_else(
        || workspace.join("target/screenshots/editor.png"),
        |f| std::env::current_dir().unwrap_or_default().join(f),
    );
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let test = [
        "-p",
        "stemgen-tests",
        "--test",
        "clap_host",
        "editor_screenshot",
    ];
    ignored_test_under_xvfb(&test, Some(("STEMGEN_SCREENSHOT", out.as_os_str())))
}

/// Runs the CLAP host's drag-out scenario on a virtual display.
fn drag_test() -> ExitCode {
    let test = [
        "-p",
        "stemgen-tests",
        "--test",
        "clap_host",
        "editor_drag_out",
    ];
    ignored_test_under_xvfb(&test, None)
}

/// `cargo test TEST -- --ignored` under `xvfb-run` with a 24-bit screen (installed first
/// when missing), with one extra environment variable.
fn ignored_test_under_xvfb(test: &[&str], env: Option<(&str, &std::ffi::OsStr)>) -> ExitCode {
    let setup =
        setup::ensure_system_packages().and_then(|()| setup::ensure_packages(setup::XVFB_PACKAGES));
    if let Err(e) = setup {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new("xvfb-run");
    command
        .args(["-a", "-s", "-screen 0 1280x1024x24"])
        .arg(cargo)
        .arg("test")
        .args(test)
        .args(["--", "--ignored", "--exact", "--nocapture"])
        .current_dir(workspace());
    if let Some((name, value)) = env {
        command.env(name, value);
    }
    exit_code(command.status(), "xvfb-run")
}

/// Runs the CLAP host's process benchmark on the release bundle.
fn bench_process() -> ExitCode {
    if let Err(e) = setup::ensure_system_packages() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "test",
            "--release",
            "-p",
            "stemgen-tests",
            "--test",
            "clap_host",
        ])
        .args([
            "process_cost_of_denormal_input",
            "--",
            "--ignored",
            "--nocapture",
        ])
        .env("STEMGEN_BUNDLE_RELEASE", "1")
        .status();
    exit_code(status, "cargo")
}

/// The exit code of a command this xtask ran (`program` names it when it could not start).
fn exit_code(status: std::io::Result<std::process::ExitStatus>, program: &str) -> ExitCode {
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("error: cannot run {program}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask's parent folder).
fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

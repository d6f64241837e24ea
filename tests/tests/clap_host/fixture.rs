//! Shared fixture: one bundle, one tiny model and one takes folder for the whole test binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::Device;
use clack_host::prelude::*;
use stemgen::analysis::context_features::ContextFeature;
use stemgen::model::{ModelCheckpoint, ModelConfig};

pub(crate) struct Env {
    pub(crate) entry: PluginEntry,
    pub(crate) takes_root: PathBuf,
}

/// Builds the bundle, writes the tiny model and points the plugin at it (once per binary: the
/// tests run in parallel threads of one process, which share the environment).
pub(crate) fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate lives in the workspace");
        // A target directory of its own: the outer `cargo test` holds the lock on `target/`.
        // Benchmarks ask for the release build (`STEMGEN_BUNDLE_RELEASE`), in another one.
        let release = std::env::var_os(BUNDLE_RELEASE_ENV).is_some();
        let target = workspace.join("target").join(if release {
            "clap-host-bench"
        } else {
            "clap-host-test"
        });
        let bundle = build_bundle(workspace, &target, release);

        let run = target.join("run");
        let _ = std::fs::remove_dir_all(&run);
        let model = run.join("model");
        write_tiny_model(&model, workspace);
        let takes_root = run.join("takes");
        std::fs::create_dir_all(&takes_root).unwrap();
        // Read by the plugin when it generates, long after this; no instance exists yet.
        std::env::set_var("STEMGEN_MODEL_DIR", &model);
        std::env::set_var("STEMGEN_TAKES_DIR", &takes_root);

        // SAFETY: the library is this workspace's own CLAP plugin, built just above.
        let entry = unsafe { PluginEntry::load(&bundle) }
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", bundle.display()));
        Env { entry, takes_root }
    })
}

/// Set: the plug-in is bundled in release mode (for `cargo xtask bench-process`).
pub(crate) const BUNDLE_RELEASE_ENV: &str = "STEMGEN_BUNDLE_RELEASE";

/// `cargo xtask bundle stemgen-plugin` (debug, so allocations in `process` abort, unless
/// `release`); returns the `.clap` it made.
fn build_bundle(workspace: &Path, target: &Path, release: bool) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = vec!["xtask", "bundle", "stemgen-plugin"];
    if release {
        args.push("--release");
    }
    let output = Command::new(cargo)
        .args(&args)
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("cannot run cargo");
    assert!(
        output.status.success(),
        "`cargo xtask bundle stemgen-plugin` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let bundle = target.join("bundled").join("StemGen.clap");
    assert!(bundle.exists(), "no bundle at {}", bundle.display());
    bundle
}

/// A model directory like the engine's generate tests use: a random tiny transformer whose
/// levels and codebook match the fixture EnCodec in `codec/`.
fn write_tiny_model(dir: &Path, workspace: &Path) {
    // With context features, so chords and a key are accepted (and measured features of
    // every capture go through the engine).
    let config = ModelConfig {
        context_features: ContextFeature::ALL.to_vec(),
        ..ModelConfig::tiny(40)
    };
    std::fs::create_dir_all(dir).unwrap();
    ModelCheckpoint::random(&config, &Device::Cpu, 7)
        .unwrap()
        .save(dir)
        .unwrap();
    let codec = dir.join("codec");
    std::fs::create_dir(&codec).unwrap();
    let fixtures = workspace.join("engine/tests/fixtures/encodec");
    for file in ["model.safetensors", "config.json"] {
        std::fs::copy(fixtures.join(file), codec.join(file)).unwrap();
    }
    std::fs::write(
        dir.join("tokenizer.json"),
        r#"{"kind": "encodec", "weights": "codec/model.safetensors"}"#,
    )
    .unwrap();
}

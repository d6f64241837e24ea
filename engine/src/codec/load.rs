//! The tokenizer of a model directory, described by `tokenizer.json`:
//!
//! ```json
//! {"kind": "encodec", "weights": "encodec/model.safetensors"}
//! ```
//!
//! `weights` is relative to the model directory (or absolute). For `encodec`, a
//! `config.json` beside the weights is used when present (MusicGen's 32 kHz config
//! otherwise). A new kind is one arm in [`load_kind`] plus its name in [`KNOWN_KINDS`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;

use super::encodec::Encodec;
use super::magnitude::MagnitudeTokenizer;
use super::Tokenizer;

/// File name of the tokenizer description inside a model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The `kind`s [`load_tokenizer`] understands.
pub const KNOWN_KINDS: &[&str] = &["encodec", "magnitude-rvq"];

/// Loads the tokenizer described by `model_dir/tokenizer.json` on the CPU.
pub fn load_tokenizer(model_dir: &Path) -> Result<Box<dyn Tokenizer>> {
    load_tokenizer_on(model_dir, &Device::Cpu)
}

/// Loads the tokenizer described by `model_dir/tokenizer.json` on `device`.
pub fn load_tokenizer_on(model_dir: &Path, device: &Device) -> Result<Box<dyn Tokenizer>> {
    let path = model_dir.join(TOKENIZER_FILE);
    if !path.is_file() {
        bail!(
            "{}: missing; a model directory needs a {TOKENIZER_FILE} naming its tokenizer, \
             e.g. {{\"kind\": \"encodec\", \"weights\": \"encodec/model.safetensors\"}}",
            path.display()
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let spec: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let kind = spec.get("kind").and_then(|k| k.as_str()).with_context(|| {
        format!(
            "{}: no \"kind\" string (known kinds: {})",
            path.display(),
            KNOWN_KINDS.join(", ")
        )
    })?;
    let spec = Spec {
        file: &path,
        dir: model_dir,
        json: &spec,
    };
    load_kind(kind, &spec, device)
}

/// A parsed `tokenizer.json` with helpers that phrase errors naming the file.
struct Spec<'a> {
    file: &'a Path,
    dir: &'a Path,
    json: &'a serde_json::Value,
}

impl Spec<'_> {
    /// The path (file or folder) in string field `field`, resolved against the model
    /// directory; it must exist.
    fn existing_path(&self, field: &str) -> Result<PathBuf> {
        let rel = self
            .json
            .get(field)
            .and_then(|v| v.as_str())
            .with_context(|| format!("{}: no \"{field}\" path", self.file.display()))?;
        let path = self.dir.join(rel);
        if !path.exists() {
            bail!(
                "{}: \"{field}\" names {}, which does not exist",
                self.file.display(),
                path.display()
            );
        }
        Ok(path)
    }
}

/// One arm per tokenizer kind.
fn load_kind(kind: &str, spec: &Spec, device: &Device) -> Result<Box<dyn Tokenizer>> {
    match kind {
        "encodec" => {
            let weights = spec.existing_path("weights")?;
            let model = Encodec::load_with_sidecar_config(&weights, device).with_context(|| {
                format!(
                    "{}: cannot load the EnCodec weights {}",
                    spec.file.display(),
                    weights.display()
                )
            })?;
            Ok(Box::new(model))
        }
        "magnitude-rvq" => {
            let dir = spec.existing_path("dir")?;
            let model = MagnitudeTokenizer::load(&dir).with_context(|| {
                format!(
                    "{}: cannot load the magnitude tokenizer in {}",
                    spec.file.display(),
                    dir.display()
                )
            })?;
            Ok(Box::new(model))
        }
        other => bail!(
            "{}: unknown tokenizer kind '{other}' (known kinds: {})",
            spec.file.display(),
            KNOWN_KINDS.join(", ")
        ),
    }
}

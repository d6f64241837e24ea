//! A tokenizer directory: `config.json` (name, format version, config) and
//! `codebooks.safetensors` (codebooks, refinement weights, joint decoder codewords, postnet
//! tensors), written by [`MagnitudeTokenizer::save`] and checked by
//! [`MagnitudeTokenizer::load`].

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};

use super::postnet;
use super::{MagnitudeConfig, MagnitudeTokenizer};
use super::{
    CODEBOOKS_FILE, CONFIG_FILE, DECODER_TENSOR_PREFIX, FORMAT_VERSION, NAME, REFINE_TENSOR,
};

impl MagnitudeTokenizer {
    /// Saves `config.json` and `codebooks.safetensors` into `dir` (created if missing).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
        let json = serde_json::json!({
            "tokenizer": NAME,
            "format_version": FORMAT_VERSION,
            "config": self.config,
        });
        let path = dir.join(CONFIG_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        let mut tensors = HashMap::new();
        for (q, cb) in self.codebooks.iter().enumerate() {
            let bins = self.config.bins();
            let t = Tensor::from_slice(cb, (cb.len() / bins, bins), &Device::Cpu)?;
            tensors.insert(format!("level{q}"), t);
        }
        if let (Some(w), Some(layout)) = (&self.refine, self.config.refine_layout()) {
            let t = Tensor::from_slice(w, (self.config.bins(), layout.features()), &Device::Cpu)?;
            tensors.insert(REFINE_TENSOR.to_string(), t);
        }
        for (q, cw) in self.decoder.iter().flatten().enumerate() {
            let shape = (self.config.codebook_size, self.config.bins());
            let t = Tensor::from_slice(cw, shape, &Device::Cpu)?;
            tensors.insert(format!("{DECODER_TENSOR_PREFIX}{q}"), t);
        }
        for (name, t) in self.postnet.iter().flat_map(|(_, tensors)| tensors) {
            tensors.insert(format!("{}{name}", postnet::TENSOR_PREFIX), t.clone());
        }
        let path = dir.join(CODEBOOKS_FILE);
        candle_core::safetensors::save(&tensors, &path)
            .with_context(|| format!("{}: cannot write", path.display()))
    }

    /// Loads a directory written by [`MagnitudeTokenizer::save`].
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read tokenizer config", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        match json.get("tokenizer").and_then(|v| v.as_str()) {
            Some(NAME) => {}
            other => bail!(
                "{}: tokenizer is {:?}, expected {NAME:?}",
                path.display(),
                other
            ),
        }
        let version = json.get("format_version").and_then(|v| v.as_u64());
        ensure!(
            version == Some(FORMAT_VERSION as u64),
            "{}: format_version {:?} is not supported (expected {FORMAT_VERSION})",
            path.display(),
            version
        );
        let config: MagnitudeConfig = serde_json::from_value(
            json.get("config")
                .cloned()
                .with_context(|| format!("{}: no 'config' object", path.display()))?,
        )
        .with_context(|| format!("{}: invalid config", path.display()))?;
        config
            .validate()
            .with_context(|| format!("{}: invalid config", path.display()))?;

        let path = dir.join(CODEBOOKS_FILE);
        ensure!(
            path.is_file(),
            "{}: codebook file is missing",
            path.display()
        );
        let map = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| anyhow::anyhow!("{}: not a safetensors file ({e})", path.display()))?;
        let mut codebooks = Vec::with_capacity(config.levels);
        for q in 0..config.levels {
            let name = format!("level{q}");
            let t = map
                .get(&name)
                .with_context(|| format!("{}: no '{name}' tensor", path.display()))?;
            let want = (config.level_size(q), config.bins());
            let dims = t.dims2().ok();
            ensure!(
                dims == Some(want),
                "{}: '{name}' has shape {:?}, the config needs {:?}",
                path.display(),
                t.dims(),
                want
            );
            codebooks.push(
                t.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1()?,
            );
        }
        let refine = match config.refine_layout() {
            None => None,
            Some(layout) => {
                let t = map.get(REFINE_TENSOR).with_context(|| {
                    format!(
                        "{}: no '{REFINE_TENSOR}' tensor, which the config asks for",
                        path.display()
                    )
                })?;
                let want = (config.bins(), layout.features());
                ensure!(
                    t.dims2().ok() == Some(want),
                    "{}: '{REFINE_TENSOR}' has shape {:?}, the config needs {:?}",
                    path.display(),
                    t.dims(),
                    want
                );
                Some(
                    t.to_dtype(candle_core::DType::F32)?
                        .flatten_all()?
                        .to_vec1()?,
                )
            }
        };
        let decoder = if config.joint_decoder {
            let want = (config.codebook_size, config.bins());
            let levels = (0..config.levels)
                .map(|q| {
                    let name = format!("{DECODER_TENSOR_PREFIX}{q}");
                    let t = map.get(&name).with_context(|| {
                        format!(
                            "{}: no '{name}' tensor, which the config's joint decoder needs",
                            path.display()
                        )
                    })?;
                    ensure!(
                        t.dims2().ok() == Some(want),
                        "{}: '{name}' has shape {:?}, the config needs {:?}",
                        path.display(),
                        t.dims(),
                        want
                    );
                    Ok(t.to_dtype(candle_core::DType::F32)?
                        .flatten_all()?
                        .to_vec1()?)
                })
                .collect::<Result<Vec<Vec<f32>>>>()?;
            Some(levels)
        } else {
            None
        };
        let postnet_tensors: Option<HashMap<String, Tensor>> = config.postnet.map(|_| {
            map.iter()
                .filter_map(|(k, t)| {
                    k.strip_prefix(postnet::TENSOR_PREFIX)
                        .map(|name| (name.to_string(), t.clone()))
                })
                .collect()
        });
        if let (Some(p), Some(t)) = (&config.postnet, &postnet_tensors) {
            ensure!(
                t.len() == p.tensor_count(config.levels),
                "{}: holds {} '{}*' tensors, the config's postnet needs {}",
                path.display(),
                t.len(),
                postnet::TENSOR_PREFIX,
                p.tensor_count(config.levels)
            );
        }
        let expected = config.levels
            + usize::from(refine.is_some())
            + decoder.as_ref().map_or(0, |d| d.len())
            + config.postnet.map_or(0, |p| p.tensor_count(config.levels));
        ensure!(
            map.len() == expected,
            "{}: holds {} tensors, the config needs {expected}",
            path.display(),
            map.len(),
        );
        Self::from_parts(config, codebooks, refine, decoder, postnet_tensors)
            .with_context(|| format!("{}", dir.display()))
    }
}

//! Finding EnCodec tensors in a checkpoint, whatever naming generation wrote it.
//!
//! Accepted: Hugging Face transformers names (`encoder.layers.0.conv.weight`), with or without
//! MusicGen's `audio_encoder.` prefix, with weight norm stored as `weight_g`/`weight_v` (old
//! `torch.nn.utils.weight_norm`) or `parametrizations.weight.original0/1` (new), or folded.

use super::StageSpec;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub struct Checkpoint {
    path: PathBuf,
    prefix: String,
    tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("{}: cannot read weights file", path.display()))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
            anyhow::anyhow!(
                "{}: not a valid safetensors file (truncated or corrupt?): {e}",
                path.display()
            )
        })?;
        Self::from_tensors(path, tensors)
    }

    /// Wraps tensors already in memory; `path` only names them in messages.
    pub fn from_tensors(path: &Path, tensors: HashMap<String, Tensor>) -> Result<Self> {
        let prefix = ["", "audio_encoder.", "model.audio_encoder."]
            .into_iter()
            .find(|p| {
                tensors
                    .keys()
                    .any(|k| k.starts_with(&format!("{p}encoder.layers.0.")))
            })
            .with_context(|| {
                format!(
                    "{}: no EnCodec tensors found (expected names like 'encoder.layers.0.conv.weight')",
                    path.display()
                )
            })?
            .to_string();
        Ok(Checkpoint {
            path: path.to_path_buf(),
            prefix,
            tensors,
        })
    }

    fn raw(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(&format!("{}{name}", self.prefix))
    }

    /// A tensor as f32 with the expected shape, or an error naming the file and the tensor.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.raw(name).with_context(|| {
            format!(
                "{}: missing tensor '{}{name}' (weights do not match the EnCodec config)",
                self.path.display(),
                self.prefix
            )
        })?;
        self.checked(name, t, shape)
    }

    fn checked(&self, name: &str, t: &Tensor, shape: &[usize]) -> Result<Tensor> {
        if t.dims() != shape {
            bail!(
                "{}: tensor '{}{name}' has shape {:?} but the config needs {:?} (config and weights do not match)",
                self.path.display(),
                self.prefix,
                t.dims(),
                shape
            );
        }
        let t = t.to_dtype(DType::F32)?;
        let has_bad = t
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .any(|v| !v.is_finite());
        if has_bad {
            bail!(
                "{}: tensor '{}{name}' contains NaN or infinite values",
                self.path.display(),
                self.prefix
            );
        }
        Ok(t)
    }

    /// A convolution weight of `shape`, folding weight norm (g * v / |v|, norm over all dims
    /// but the first, as `torch.nn.utils.weight_norm(dim=0)`) when it is stored unfolded.
    pub fn conv_weight(&self, module: &str, shape: &[usize]) -> Result<Tensor> {
        let plain = format!("{module}.weight");
        if self.raw(&plain).is_some() {
            return self.get(&plain, shape);
        }
        let g_shape = [shape[0], 1, 1];
        let (g, v) = if self.raw(&format!("{module}.weight_g")).is_some() {
            (
                self.get(&format!("{module}.weight_g"), &g_shape)?,
                self.get(&format!("{module}.weight_v"), shape)?,
            )
        } else {
            (
                self.get(
                    &format!("{module}.parametrizations.weight.original0"),
                    &g_shape,
                )?,
                self.get(
                    &format!("{module}.parametrizations.weight.original1"),
                    shape,
                )?,
            )
        };
        let norm = v.sqr()?.sum_keepdim((1, 2))?.sqrt()?;
        Ok(v.broadcast_div(&norm)?.broadcast_mul(&g)?)
    }
}

/// Seeded random weights with every tensor an EnCodec of `cfg` needs (folded weight norm).
/// Speed does not depend on weight values, so benchmarks and mechanics tests use these.
pub fn random_weights(
    cfg: &super::EncodecConfig,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    use rand::{Rng, SeedableRng};
    // (name, shape, uniform range): fan-in scaled, like PyTorch's default initialisation.
    let mut specs: Vec<(String, Vec<usize>, f32)> = Vec::new();
    let mut conv = |name: &str, shape: [usize; 3], out_ch: usize, fan_in: usize| {
        specs.push((format!("{name}.conv.bias"), vec![out_ch], 0.01));
        specs.push((
            format!("{name}.conv.weight"),
            shape.to_vec(),
            (fan_in as f32).sqrt().recip(),
        ));
    };
    let mut lstms = Vec::new();
    for spec in super::encoder_plan(cfg)
        .iter()
        .chain(&super::decoder_plan(cfg))
    {
        match spec {
            StageSpec::Conv(c) => conv(&c.name, c.shape(), c.c_out, c.c_in * c.kernel),
            StageSpec::ConvTranspose(c) => conv(&c.name, c.shape(), c.c_out, c.c_in * c.kernel),
            StageSpec::Residual(r) => {
                for c in r.convs(cfg) {
                    conv(&c.name, c.shape(), c.c_out, c.c_in * c.kernel);
                }
            }
            StageSpec::Lstm { name, dim, layers } => lstms.push((name.clone(), *dim, *layers)),
            StageSpec::Elu => {}
        }
    }
    for (name, dim, layers) in lstms {
        let s = (dim as f32).sqrt().recip();
        for l in 0..layers {
            specs.push((format!("{name}.lstm.weight_ih_l{l}"), vec![4 * dim, dim], s));
            specs.push((format!("{name}.lstm.weight_hh_l{l}"), vec![4 * dim, dim], s));
            specs.push((format!("{name}.lstm.bias_ih_l{l}"), vec![4 * dim], s));
            specs.push((format!("{name}.lstm.bias_hh_l{l}"), vec![4 * dim], s));
        }
    }
    for q in 0..cfg.num_quantizers() {
        let name = format!("quantizer.layers.{q}.codebook.embed");
        specs.push((name, vec![cfg.codebook_size, cfg.hidden_size], 1.0));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    specs
        .into_iter()
        .map(|(name, shape, scale)| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-scale..scale)).collect();
            Ok((name, Tensor::from_vec(v, shape, device)?))
        })
        .collect()
}

//! Model directories (`config.json` + `model.safetensors`), seeded random initialisation,
//! and loading that checks the weights against the config tensor by tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use candle_core::{bail, DType, Device, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::transformer::{CONTEXT_FEATURES_PROJ, GAIN_EMBED};
use super::{ModelConfig, ModelError, StemGenModel};

/// File names inside a model directory.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// A model together with its trainable variables: what training updates and saves, and
/// what inference loads. `vars` holds exactly the tensors the model uses, as `Var`s, so
/// `vars.all_vars()` is what the optimiser needs.
pub struct ModelCheckpoint {
    pub model: StemGenModel,
    pub vars: VarMap,
}

impl ModelCheckpoint {
    /// The trainable variables by their safetensors names (what an optimiser keyed by name
    /// needs). A poisoned lock (a thread panicked while holding it) is an error, not a panic.
    pub fn named_vars(
        &self,
    ) -> Result<std::collections::HashMap<String, candle_core::Var>, ModelError> {
        let map = self.vars.data().lock().map_err(|_| {
            ModelError::Candle(candle_core::Error::Msg(
                "the model's variables are poisoned".into(),
            ))
        })?;
        Ok(map.clone())
    }

    /// A freshly initialised model. The CPU device cannot be seeded in candle, so the
    /// initial weights are drawn from `StdRng::seed_from_u64(seed)` instead: the same seed
    /// gives the same model on every device.
    pub fn random(config: &ModelConfig, device: &Device, seed: u64) -> Result<Self, ModelError> {
        config.validate().map_err(ModelError::Config)?;
        let source = VarSource::new(Source::Seeded(Box::new(Mutex::new(StdRng::seed_from_u64(
            seed,
        )))));
        let vars = source.vars.clone();
        let vb = VarBuilder::from_backend(Box::new(source), DType::F32, device.clone());
        let model = StemGenModel::new(config, vb)?;
        Ok(ModelCheckpoint { model, vars })
    }

    /// Loads a model directory written by [`Self::save`]. Every tensor the config needs must
    /// be present with the right shape, and the file must hold no others: a config that does
    /// not match the weights is an error naming the file and the tensor.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let config = read_config(dir)?;
        Self::load_as(dir, &config, false, device)
    }

    /// Loads the trained model in `dir` into `config`, which may add a gain embedding
    /// ([`ModelConfig::gain_steps`]) or context features ([`ModelConfig::context_features`])
    /// to a model trained without them; every other setting must match. The added tables
    /// start at zero, so the model computes what it did before, and
    /// training continues from there (`train model --init-from`).
    pub fn load_extended(
        dir: &Path,
        config: &ModelConfig,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let stored = read_config(dir)?;
        let comparable = ModelConfig {
            gain_steps: config.gain_steps,
            context_features: config.context_features.clone(),
            ..stored.clone()
        };
        if comparable != *config
            || (stored.gain_steps != 0 && stored.gain_steps != config.gain_steps)
            || (!stored.context_features.is_empty()
                && stored.context_features != config.context_features)
        {
            return Err(ModelError::File {
                path: dir.join(CONFIG_FILE),
                problem: "its config differs from the config being trained in more than an \
                          added gain embedding (gain_steps) or added context features \
                          (context_features)"
                    .into(),
            });
        }
        Self::load_as(dir, config, true, device)
    }

    fn load_as(
        dir: &Path,
        config: &ModelConfig,
        extend: bool,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let config = config.clone();
        let weights_path = dir.join(WEIGHTS_FILE);
        let file_error = |problem: String| ModelError::File {
            path: weights_path.clone(),
            problem,
        };
        if !weights_path.is_file() {
            return Err(file_error("the weights file is missing".into()));
        }
        let stored = candle_core::safetensors::load(&weights_path, device).map_err(|e| {
            file_error(format!(
                "not a readable safetensors file (corrupt or truncated?): {e}"
            ))
        })?;
        let stored_names: Vec<String> = stored.keys().cloned().collect();
        let source = VarSource::new(if extend {
            Source::StoredExtended(stored)
        } else {
            Source::Stored(stored)
        });
        let vars = source.vars.clone();
        let vb = VarBuilder::from_backend(Box::new(source), DType::F32, device.clone());
        let model = StemGenModel::new(&config, vb)
            .map_err(|e| file_error(format!("{e} (does {CONFIG_FILE} match these weights?)")))?;

        let used = lock(vars.data());
        let mut unused: Vec<&String> = stored_names
            .iter()
            .filter(|name| !used.contains_key(*name))
            .collect();
        if !unused.is_empty() {
            unused.sort();
            return Err(file_error(format!(
                "holds {} tensor(s) that {CONFIG_FILE} does not describe, e.g. `{}` \
                 (does {CONFIG_FILE} match these weights?)",
                unused.len(),
                unused[0]
            )));
        }
        drop(used);
        Ok(ModelCheckpoint { model, vars })
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if needed). Each file
    /// is written under a temporary name and renamed, so an interrupted save never leaves a
    /// half-written file under the real name.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::File {
            path: dir.to_path_buf(),
            problem: format!("cannot create the model directory: {e}"),
        })?;
        let config_path = dir.join(CONFIG_FILE);
        let json = serde_json::to_string_pretty(self.config()).map_err(|e| ModelError::File {
            path: config_path.clone(),
            problem: format!("cannot serialise the config: {e}"),
        })?;
        write_then_rename(&config_path, |tmp| {
            std::fs::write(tmp, json.as_bytes()).map_err(|e| e.to_string())
        })?;
        write_then_rename(&dir.join(WEIGHTS_FILE), |tmp| {
            self.vars.save(tmp).map_err(|e| e.to_string())
        })
    }

    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// Number of scalar parameters actually held (equals `config().parameter_count()`).
    pub fn parameter_count(&self) -> usize {
        lock(self.vars.data())
            .values()
            .map(|var| var.elem_count())
            .sum()
    }
}

/// Reads and validates `dir/config.json` without touching the weights.
pub fn read_config(dir: &Path) -> Result<ModelConfig, ModelError> {
    let path = dir.join(CONFIG_FILE);
    let file_error = |problem: String| ModelError::File {
        path: path.clone(),
        problem,
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| file_error(format!("cannot read the model config: {e}")))?;
    let config: ModelConfig = serde_json::from_str(&text)
        .map_err(|e| file_error(format!("not a valid model config: {e}")))?;
    config
        .validate()
        .map_err(|problem| file_error(format!("invalid model config: {problem}")))?;
    Ok(config)
}

fn write_then_rename(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), ModelError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write(&tmp)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()))
        .map_err(|problem| {
            let _ = std::fs::remove_file(&tmp);
            ModelError::File {
                path: path.to_path_buf(),
                problem: format!("cannot write: {problem}"),
            }
        })
}

/// A poisoned lock only means another thread panicked mid-update of a map we only read or
/// insert into; the data is still usable, so never turn that into a second panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where parameter values come from while the model is built.
enum Source {
    /// Boxed: the RNG state is large and the enum lives only while the model is built.
    Seeded(Box<Mutex<StdRng>>),
    Stored(HashMap<String, Tensor>),
    /// Stored tensors, where parts a config adds to a trained model (the zero-initialised
    /// gain embedding, the context-feature projection) take their initial value when the file
    /// lacks them.
    StoredExtended(HashMap<String, Tensor>),
}

/// A `VarBuilder` backend that turns every requested parameter into a `Var` in `vars`,
/// with values drawn from a seeded RNG or taken (shape-checked) from loaded tensors.
struct VarSource {
    source: Source,
    vars: VarMap,
}

impl VarSource {
    fn new(source: Source) -> Self {
        VarSource {
            source,
            vars: VarMap::new(),
        }
    }
}

impl SimpleBackend for VarSource {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut vars = lock(self.vars.data());
        if let Some(var) = vars.get(name) {
            if var.shape() != &shape {
                bail!(
                    "tensor `{name}` requested with shapes {:?} and {:?}",
                    var.dims(),
                    shape.dims()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let value = match &self.source {
            Source::Seeded(rng) => seeded_tensor(&shape, init, &mut lock(rng), device)?,
            Source::StoredExtended(tensors)
                if (name == GAIN_EMBED || name == CONTEXT_FEATURES_PROJ)
                    && !tensors.contains_key(name) =>
            {
                let mut unused_rng = StdRng::seed_from_u64(0);
                seeded_tensor(&shape, init, &mut unused_rng, device)?
            }
            Source::Stored(tensors) | Source::StoredExtended(tensors) => {
                let Some(tensor) = tensors.get(name) else {
                    bail!("tensor `{name}` is missing");
                };
                if tensor.shape() != &shape {
                    bail!(
                        "tensor `{name}` has shape {:?} but the config needs {:?}",
                        tensor.dims(),
                        shape.dims()
                    );
                }
                tensor.to_device(device)?
            }
        };
        let var = Var::from_tensor(&value.to_dtype(dtype)?)?;
        let tensor = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        match &self.source {
            Source::Stored(tensors) | Source::StoredExtended(tensors) => match tensors.get(name) {
                Some(tensor) => tensor.to_device(device)?.to_dtype(dtype),
                None => bail!("tensor `{name}` is missing"),
            },
            Source::Seeded(_) => bail!("tensor `{name}` needs a shape to be initialised"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        lock(self.vars.data()).contains_key(name)
            || matches!(&self.source, Source::Stored(t) | Source::StoredExtended(t) if t.contains_key(name))
    }
}

/// Draws a tensor for `init` from `rng` (f32, then moved to `device`).
fn seeded_tensor(
    shape: &Shape,
    init: Init,
    rng: &mut StdRng,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let count = shape.elem_count();
    let values: Vec<f32> = match init {
        Init::Const(value) => vec![value as f32; count],
        Init::Uniform { lo, up } => (0..count)
            .map(|_| {
                if lo < up {
                    rng.gen_range(lo..up) as f32
                } else {
                    lo as f32
                }
            })
            .collect(),
        Init::Randn { mean, stdev } => normal_values(count, mean, stdev, rng),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let stdev = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal_values(count, 0.0, stdev, rng),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * stdev;
                    (0..count)
                        .map(|_| rng.gen_range(-bound..=bound) as f32)
                        .collect()
                }
            }
        }
    };
    Tensor::from_vec(values, shape.clone(), device)
}

/// Gaussian samples by the Box-Muller transform (rand 0.8 has no normal distribution
/// without the extra `rand_distr` crate).
fn normal_values(count: usize, mean: f64, stdev: f64, rng: &mut StdRng) -> Vec<f32> {
    let mut values = Vec::with_capacity(count + 1);
    while values.len() < count {
        let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]: keeps ln finite
        let u2: f64 = rng.gen();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * u2;
        values.push((mean + stdev * radius * angle.cos()) as f32);
        values.push((mean + stdev * radius * angle.sin()) as f32);
    }
    values.truncate(count);
    values
}

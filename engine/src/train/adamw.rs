//! AdamW whose moments can be saved with a checkpoint.
//!
//! candle-nn's `AdamW` keeps its moments private, so a resumed run had to restart them and
//! trained differently from one that was never interrupted. This one does the same update
//! (decoupled weight decay, bias-corrected moments, the same operations in the same order)
//! and writes its state to a safetensors file, so resuming continues exactly.

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Var};
use std::collections::HashMap;
use std::path::Path;

pub struct AdamW {
    /// Parameters in name order, each with its first and second moment.
    params: Vec<Param>,
    lr: f64,
    weight_decay: f64,
    /// Updates applied so far (drives the bias correction).
    steps: usize,
}

struct Param {
    name: String,
    /// Multiplies the learning rate (and with it the weight decay) for this parameter.
    lr_scale: f64,
    var: Var,
    m: Var,
    v: Var,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl AdamW {
    /// Zero moments for every floating-point parameter of `vars` (name -> variable).
    pub fn new(vars: &HashMap<String, Var>, lr: f64, weight_decay: f64) -> Result<Self> {
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        let params = names
            .into_iter()
            .filter(|name| vars[*name].dtype().is_float())
            .map(|name| {
                let var = vars[name].clone();
                let zeros = || Var::zeros(var.shape(), var.dtype(), var.device());
                Ok(Param {
                    name: name.clone(),
                    lr_scale: 1.0,
                    m: zeros()?,
                    v: zeros()?,
                    var,
                })
            })
            .collect::<Result<_>>()?;
        Ok(AdamW {
            params,
            lr,
            weight_decay,
            steps: 0,
        })
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Trains the parameter `name` with `scale` times the learning rate. A parameter added to
    /// a trained model (zero-initialised) otherwise moves as slowly as the settled ones and
    /// stays too small to matter within a short fine-tune.
    pub fn scale_learning_rate(&mut self, name: &str, scale: f64) -> Result<()> {
        if !(scale.is_finite() && scale > 0.0) {
            bail!("the learning-rate scale {scale} of {name} must be a positive number");
        }
        let Some(p) = self.params.iter_mut().find(|p| p.name == name) else {
            bail!("no trained parameter is called {name}");
        };
        p.lr_scale = scale;
        Ok(())
    }

    /// Updates applied so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// One update from `grads`; parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.steps += 1;
        let scale_m = 1.0 / (1.0 - BETA1.powi(self.steps as i32));
        let scale_v = 1.0 / (1.0 - BETA2.powi(self.steps as i32));
        for p in &self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let lr = self.lr * p.lr_scale;
            if g.device().is_cpu() && g.dtype() == DType::F32 {
                let constants = Constants::new(lr, self.weight_decay, (scale_m, scale_v));
                fused_update(p, g, constants)?;
                continue;
            }
            let m = ((p.m.as_tensor() * BETA1)? + (g * (1.0 - BETA1))?)?;
            let v = ((p.v.as_tensor() * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let decayed = (p.var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            let update = ((&m * scale_m)? / ((&v * scale_v)?.sqrt()? + EPS)?)?;
            p.var.set(&(decayed - (update * lr)?)?)?;
            p.m.set(&m)?;
            p.v.set(&v)?;
        }
        Ok(())
    }

    /// Writes the moments to `path` (`m.NAME` and `v.NAME` tensors); the step count goes
    /// into the training state.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for p in &self.params {
            tensors.insert(format!("m.{}", p.name), p.m.as_tensor().clone());
            tensors.insert(format!("v.{}", p.name), p.v.as_tensor().clone());
        }
        candle_core::safetensors::save(&tensors, path)
            .with_context(|| format!("{}: cannot write the optimizer state", path.display()))
    }

    /// Restores the moments written by [`AdamW::save`] after `steps` updates. Every
    /// parameter must have both moments, with its shape.
    pub fn load(&mut self, path: &Path, steps: usize) -> Result<()> {
        let device = self.params.first().map(|p| p.var.device().clone());
        let Some(device) = device else {
            self.steps = steps;
            return Ok(());
        };
        let file = path.display();
        let mut tensors = candle_core::safetensors::load(path, &device)
            .with_context(|| format!("{file}: unreadable optimizer state"))?;
        for p in &self.params {
            for (kind, moment) in [("m", &p.m), ("v", &p.v)] {
                let key = format!("{kind}.{}", p.name);
                let Some(t) = tensors.remove(&key) else {
                    bail!("{file}: optimizer state lacks `{key}` (saved for another model?)");
                };
                if t.shape() != p.var.shape() || t.dtype() != p.var.dtype() {
                    bail!(
                        "{file}: `{key}` is {:?} {:?}, the parameter is {:?} {:?}",
                        t.dtype(),
                        t.dims(),
                        p.var.dtype(),
                        p.var.dims()
                    );
                }
                moment.set(&t)?;
            }
        }
        if let Some(extra) = tensors.keys().next() {
            bail!("{file}: optimizer state has `{extra}`, which the model lacks");
        }
        self.steps = steps;
        Ok(())
    }
}

/// The update's constants as candle's f32 ops see them (each f64 rounded on its own).
#[derive(Clone, Copy)]
struct Constants {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    decay: f32,
    scale_m: f32,
    scale_v: f32,
    eps: f32,
    lr: f32,
}

impl Constants {
    fn new(lr: f64, weight_decay: f64, (scale_m, scale_v): (f64, f64)) -> Self {
        Constants {
            beta1: BETA1 as f32,
            one_minus_beta1: (1.0 - BETA1) as f32,
            beta2: BETA2 as f32,
            one_minus_beta2: (1.0 - BETA2) as f32,
            decay: (1.0 - lr * weight_decay) as f32,
            scale_m: scale_m as f32,
            scale_v: scale_v as f32,
            eps: EPS as f32,
            lr: lr as f32,
        }
    }
}

/// One parameter's update on the CPU in a single parallel pass over its values, instead of a
/// dozen candle ops that each allocate a tensor of the parameter's size (the embedding tables
/// and output heads are most of the 5.9M values). Each value goes through the same f32
/// operations as the candle path above, in the same order (candle's scalar multiply is
/// `x * c + 0`), so the two give the same parameters bit for bit.
fn fused_update(p: &Param, g: &candle_core::Tensor, c: Constants) -> Result<()> {
    use rayon::prelude::*;
    let host = |t: &candle_core::Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1()?) };
    let (g, mut theta, mut m, mut v) = (
        host(g)?,
        host(p.var.as_tensor())?,
        host(p.m.as_tensor())?,
        host(p.v.as_tensor())?,
    );
    if g.len() != theta.len() {
        bail!(
            "{}: gradient of {} values for {}",
            p.name,
            g.len(),
            theta.len()
        );
    }
    const CHUNK: usize = 16 * 1024;
    theta
        .par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((theta, m), v), g)| {
            for (((theta, m), v), &g) in theta.iter_mut().zip(m).zip(v).zip(g) {
                *m = (*m * c.beta1 + 0.0) + (g * c.one_minus_beta1 + 0.0);
                *v = (*v * c.beta2 + 0.0) + ((g * g) * c.one_minus_beta2 + 0.0);
                let decayed = *theta * c.decay + 0.0;
                let update = (*m * c.scale_m + 0.0) / ((*v * c.scale_v + 0.0).sqrt() + c.eps);
                *theta = decayed - (update * c.lr + 0.0);
            }
        });
    let (shape, device) = (p.var.shape(), p.var.device());
    for (var, values) in [(&p.var, theta), (&p.m, m), (&p.v, v)] {
        var.set(&candle_core::Tensor::from_vec(values, shape, device)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Candle's AdamW on the same parameters and gradients (its defaults are ours).
    fn candle_reference(init: &Tensor, grads: &[Tensor], lr: f64, wd: f64) -> Tensor {
        use candle_nn::Optimizer;
        let var = Var::from_tensor(init).unwrap();
        let params = candle_nn::ParamsAdamW {
            lr,
            weight_decay: wd,
            ..Default::default()
        };
        let mut opt = candle_nn::AdamW::new(vec![var.clone()], params).unwrap();
        for g in grads {
            let mut store = var
                .as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            store.insert(var.as_tensor(), g.clone());
            opt.step(&store).unwrap();
        }
        var.as_tensor().clone()
    }

    #[test]
    fn matches_candle_adamw_and_resumes_from_saved_moments() {
        let dev = Device::Cpu;
        let init = Tensor::new(&[0.5f32, -1.0, 2.0, 0.0], &dev).unwrap();
        let grads: Vec<Tensor> = (0..6)
            .map(|i| Tensor::new(&[0.1f32 * i as f32, -0.3, 1.0, 0.02 * i as f32], &dev).unwrap())
            .collect();
        let want = candle_reference(&init, &grads, 1e-2, 0.1);
        let store_for = |var: &Var, g: &Tensor| {
            let mut store = var.as_tensor().sum_all().unwrap().backward().unwrap();
            store.insert(var.as_tensor(), g.clone());
            store
        };

        // Three steps, saved; a fresh optimizer on the same parameter loads and does three more.
        let var = Var::from_tensor(&init).unwrap();
        let vars = HashMap::from([("w".to_string(), var.clone())]);
        let mut opt = AdamW::new(&vars, 1e-2, 0.1).unwrap();
        for g in &grads[..3] {
            opt.step(&store_for(&var, g)).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        opt.save(&path).unwrap();
        let mut resumed = AdamW::new(&vars, 1e-2, 0.1).unwrap();
        resumed.load(&path, opt.steps()).unwrap();
        for g in &grads[3..] {
            resumed.step(&store_for(&var, g)).unwrap();
        }
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        assert_eq!(got, want.to_vec1::<f32>().unwrap());

        // State saved for another parameter set is refused with the file named.
        let other = HashMap::from([("u".to_string(), Var::from_tensor(&init).unwrap())]);
        let err = AdamW::new(&other, 1e-2, 0.1)
            .unwrap()
            .load(&path, 3)
            .unwrap_err();
        assert!(
            err.to_string().contains("optimizer.safetensors") && err.to_string().contains("m.u")
        );
    }

    #[test]
    fn a_scaled_parameter_moves_as_with_that_learning_rate() {
        let dev = Device::Cpu;
        let init = Tensor::new(&[0.5f32, -1.0, 2.0, 0.0], &dev).unwrap();
        let grads: Vec<Tensor> = (0..4)
            .map(|i| Tensor::new(&[0.1f32 * i as f32, -0.3, 1.0, 0.02], &dev).unwrap())
            .collect();
        let want = candle_reference(&init, &grads, 5e-2, 0.1);
        let var = Var::from_tensor(&init).unwrap();
        let fixed = Var::from_tensor(&init).unwrap();
        let vars = HashMap::from([
            ("w".to_string(), var.clone()),
            ("f".to_string(), fixed.clone()),
        ]);
        let mut opt = AdamW::new(&vars, 1e-2, 0.1).unwrap();
        opt.scale_learning_rate("w", 5.0).unwrap();
        for g in &grads {
            let mut store = var.as_tensor().sum_all().unwrap().backward().unwrap();
            store.insert(var.as_tensor(), g.clone());
            store.insert(fixed.as_tensor(), g.clone());
            opt.step(&store).unwrap();
        }
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        let want = want.to_vec1::<f32>().unwrap();
        assert!(
            got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{got:?} {want:?}"
        );
        let unscaled = candle_reference(&init, &grads, 1e-2, 0.1)
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(fixed.as_tensor().to_vec1::<f32>().unwrap(), unscaled);
        assert!(opt.scale_learning_rate("missing", 2.0).is_err());
        assert!(opt.scale_learning_rate("w", 0.0).is_err());
    }
}

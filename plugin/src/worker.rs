//! The plugin's own worker threads, one [`WorkerPool`] shared by the instances of a process and
//! started on first use (never while a host scans or activates the plugin): one thread
//! generates (a model is loaded once and shared by every instance), one loads and resamples
//! takes so selecting a take never waits behind a generation. Jobs arrive over crossbeam
//! channels; progress goes back through atomics in `JobStatus`.
//!
//! Ownership: each plugin instance holds the pool (`Arc`), its `Shared` only a `Weak`, and a
//! job holds its instance's `Shared`. When the last instance goes, the pool's `Drop` closes
//! the queues; a running generation sees its instance closed and cancels at its next step;
//! the threads are joined, the models freed. Nothing of the plugin runs after that, so a host
//! may unload the library. A later instance starts a new pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use crossbeam_channel::{unbounded, Receiver, Sender};
use stemgen::analysis::harmony::{parse_key, ChordChart};
use stemgen::audio::Audio;
use stemgen::generate::{
    is_cancelled, CategoryChoice, ContextSource, EditRequest, GenerateRequest, Generator,
    HarmonyRequest, Length, PreviousTake, Progress,
};

use crate::capture::CaptureInfo;
use crate::jobs::{GenerationJob, JobOwner, Stage};
use crate::peaks::{Peaks, TakePeaks, COLUMNS};
use crate::playback::Anchor;
use crate::take_context;
use crate::takes::{self, Take};

/// Environment variable naming the model directory (overrides the defaults, not the editor).
pub const MODEL_DIR_ENV: &str = "STEMGEN_MODEL_DIR";

/// The model directory to use: the one chosen in the editor, else `$STEMGEN_MODEL_DIR`, else
/// `<user data dir>/StemGen/models/default` (`cargo xtask install`), else
/// `/usr/share/stemgen/models/default` (`cargo xtask install --system`, Linux), else the
/// repository's `assets/default` when the plugin runs from a source checkout.
pub fn resolve_model_dir(chosen: Option<&Path>) -> PathBuf {
    if let Some(dir) = chosen {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os(MODEL_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let installed = default_model_install_dir();
    if installed.is_dir() {
        return installed;
    }
    let system = Path::new(SYSTEM_MODEL_DIR);
    if cfg!(target_os = "linux") && system.join("config.json").is_file() {
        return system.to_path_buf();
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/default");
    if checkout.join("config.json").is_file() {
        return checkout.canonicalize().unwrap_or(checkout);
    }
    installed
}

/// Where `cargo xtask install --system` puts the model on Linux.
pub const SYSTEM_MODEL_DIR: &str = "/usr/share/stemgen/models/default";

/// Where `cargo xtask install` puts the model.
pub fn default_model_install_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("StemGen")
        .join("models")
        .join("default")
}

/// A quick check of a model directory for the editor: `Err` says what is wrong and how to
/// fix it. (The full check happens when the generator loads it.)
pub fn check_model_dir(dir: &Path) -> Result<(), String> {
    let fix = format!(
        "run `cargo xtask install` in the StemGen repository (or copy its assets/default to \
         {}), set {MODEL_DIR_ENV}, or choose a model folder below",
        default_model_install_dir().display()
    );
    if !dir.is_dir() {
        return Err(format!("No model folder at {}: {fix}.", dir.display()));
    }
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        if !dir.join(file).is_file() {
            return Err(format!(
                "{} is not a model folder ({file} is missing): {fix}.",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Levels in the preview: the coarsest level alone already carries the stem's timing and
/// loudness contour, and with one level the engine decodes it early, after 30% of the level's
/// iterations (`generate::EARLY_PREVIEW_SHARE`).
const PREVIEW_LEVELS: usize = 1;

/// Names of the pool's threads (tests look for them).
pub const THREAD_NAMES: [&str; 2] = ["stemgen-generate", "stemgen-takes"];

/// The worker threads of the process (see the module docs).
#[derive(Default)]
pub struct WorkerPool {
    threads: Mutex<Option<Threads>>,
}

struct Threads {
    generate: Sender<GenerationJob>,
    load: Sender<LoadJob>,
    handles: Vec<JoinHandle<()>>,
}

/// The pool the live instances share; empty when none holds it.
static POOL: Mutex<Weak<WorkerPool>> = Mutex::new(Weak::new());

impl WorkerPool {
    /// The process's pool, made (without threads) when no instance holds one.
    pub fn acquire() -> Arc<WorkerPool> {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = pool.upgrade() {
            return existing;
        }
        let fresh = Arc::new(WorkerPool::default());
        *pool = Arc::downgrade(&fresh);
        fresh
    }

    /// The threads, started on first use.
    fn started(&self) -> std::io::Result<MutexGuard<'_, Option<Threads>>> {
        let mut guard = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let (generate, generate_rx) = unbounded();
            let (load, load_rx) = unbounded();
            let handles = vec![
                std::thread::Builder::new()
                    .name(THREAD_NAMES[0].into())
                    .spawn(move || generation_loop(generate_rx))?,
                std::thread::Builder::new()
                    .name(THREAD_NAMES[1].into())
                    .spawn(move || load_loop(load_rx))?,
            ];
            *guard = Some(Threads {
                generate,
                load,
                handles,
            });
        }
        Ok(guard)
    }

    /// Queues a generation.
    pub fn submit(&self, job: GenerationJob) {
        let sent = match self.started() {
            Ok(threads) => match threads.as_ref() {
                Some(t) => t.generate.send(job).map_err(|e| {
                    let message = "The generation thread has stopped; reload the plugin.";
                    (e.into_inner(), message.to_string())
                }),
                None => Err((job, "The generation thread is not running.".to_string())),
            },
            Err(e) => Err((job, format!("Cannot start the generation thread: {e}"))),
        };
        if let Err((job, message)) = sent {
            job.status.finish(Stage::Failed);
            job.owner.set_message(message);
        }
    }

    /// Loads a take's file for playback at the instance's current rate, off the caller's
    /// thread.
    pub fn load_take(&self, owner: Arc<dyn JobOwner>, take: Take) {
        self.send_load(LoadJob::Play(owner, take));
    }

    /// Reads a take and its context to draw their waveforms, off the caller's thread.
    pub fn load_peaks(&self, owner: Arc<dyn JobOwner>, take: Take) {
        self.send_load(LoadJob::Peaks(owner, take));
    }

    fn send_load(&self, job: LoadJob) {
        match self.started() {
            Ok(threads) => {
                if let Some(t) = threads.as_ref() {
                    let _ = t.load.send(job);
                }
            }
            Err(e) => job
                .owner()
                .set_message(format!("Cannot start the take loader thread: {e}")),
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        let threads = self
            .threads
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(Threads {
            generate,
            load,
            handles,
        }) = threads
        {
            // Closing the queues ends the loops once the running job is done; the instance
            // that queued it is gone, so it cancels at its next step.
            drop((generate, load));
            for handle in handles {
                let _ = handle.join();
            }
        }
    }
}

/// Work for the take loader thread.
enum LoadJob {
    /// Load for playback at the instance's rate.
    Play(Arc<dyn JobOwner>, Take),
    /// Read for the editor's waveforms.
    Peaks(Arc<dyn JobOwner>, Take),
}

impl LoadJob {
    fn owner(&self) -> &Arc<dyn JobOwner> {
        match self {
            LoadJob::Play(owner, _) | LoadJob::Peaks(owner, _) => owner,
        }
    }
}

fn load_loop(jobs: Receiver<LoadJob>) {
    for job in jobs {
        if job.owner().is_closed() {
            continue;
        }
        match job {
            LoadJob::Play(owner, take) => {
                match takes::load_take_audio(&take, owner.host_rate().max(1)) {
                    Ok(audio) => owner.send_take(Some(Arc::new(audio))),
                    Err(e) => owner.set_message(format!("{e:#}")),
                }
            }
            LoadJob::Peaks(owner, take) => {
                // A take whose file is gone is drawn empty (the editor says it is missing).
                let audio = stemgen::audio::read_audio(&take.path).ok();
                let context = take_context::read_context(&take).ok();
                owner.set_peaks(take.id, take_peaks(audio.as_ref(), context.as_ref()));
            }
        }
    }
}

/// The overviews of a take and its context.
fn take_peaks(take: Option<&Audio>, context: Option<&Audio>) -> Arc<TakePeaks> {
    Arc::new(TakePeaks {
        take: take.map_or_else(Peaks::default, |a| Peaks::of(&a.channels, COLUMNS)),
        context: context.map(|a| Peaks::of(&a.channels, COLUMNS)),
    })
}

fn generation_loop(jobs: Receiver<GenerationJob>) {
    // The engine computes on rayon. Its global pool would be threads of this library that
    // outlive every instance; this pool is the generation thread's own and goes with it. Its
    // threads are spawned here, so they can be joined: a pool's drop only asks them to end,
    // and a host may unload the library once the last instance is gone.
    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    let compute = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("stemgen-compute-{i}"))
        .spawn_handler(|thread| {
            let mut builder = std::thread::Builder::new();
            if let Some(name) = thread.name() {
                builder = builder.name(name.to_owned());
            }
            if let Some(size) = thread.stack_size() {
                builder = builder.stack_size(size);
            }
            handles.push(builder.spawn(|| thread.run())?);
            Ok(())
        })
        .build();
    let compute = match compute {
        Ok(pool) => pool,
        Err(e) => {
            for job in jobs {
                job.status.finish(Stage::Failed);
                job.owner
                    .set_message(format!("Cannot start the computing threads: {e}"));
            }
            return;
        }
    };
    compute.install(|| run_jobs(jobs));
    drop(compute);
    for handle in handles {
        let _ = handle.join();
    }
}

fn run_jobs(jobs: Receiver<GenerationJob>) {
    // Loaded once per pool, shared by every instance.
    let mut models: HashMap<PathBuf, Arc<Generator>> = HashMap::new();
    for job in jobs {
        let status = job.status.clone();
        let owner = job.owner.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_generation(&job, &mut models)
        }));
        match result {
            Ok(Ok(())) => status.finish(Stage::Done),
            Ok(Err(e)) if is_cancelled(&e) => {
                status.finish(Stage::Cancelled);
                owner.set_message("Generation cancelled.".into());
            }
            Ok(Err(e)) => {
                status.finish(Stage::Failed);
                owner.set_message(format!("Generation failed: {e:#}"));
            }
            Err(_) => {
                status.finish(Stage::Failed);
                owner.set_message(
                    "Generation failed: the engine panicked (please report it).".into(),
                );
            }
        }
    }
}

fn model<'a>(
    models: &'a mut HashMap<PathBuf, Arc<Generator>>,
    dir: &Path,
) -> Result<&'a Arc<Generator>> {
    if !models.contains_key(dir) {
        check_model_dir(dir).map_err(anyhow::Error::msg)?;
        let generator = Generator::load(dir)
            .with_context(|| format!("{}: cannot load the model", dir.display()))?;
        models.insert(dir.to_path_buf(), Arc::new(generator));
    }
    Ok(&models[dir])
}

fn run_generation(
    job: &GenerationJob,
    models: &mut HashMap<PathBuf, Arc<Generator>>,
) -> Result<()> {
    let status = &job.status;
    let cancel = AtomicBool::new(false);
    let check_cancel = || {
        if status.is_cancel_requested() || job.owner.is_closed() {
            cancel.store(true, Ordering::Release);
        }
    };
    status.set(Stage::LoadingModel, 0.0);
    let generator = model(models, &job.model_dir)?.clone();

    let plan = plan(job)?;
    let mut settings = generator.settings(job.quality.preset());
    settings.seed = job.seed;
    settings.lambda_context = job.cfg_context;
    settings.lambda_category = job.cfg_instrument;
    let mut request = GenerateRequest::new(
        ContextSource::Audio(plan.context.clone()),
        CategoryChoice::Id(job.instrument),
        settings,
    );
    request.length = Some(Length::Seconds(plan.seconds));
    request.output_rate = plan.info.sample_rate;
    request.output_channels = 2;
    request.harmony = harmony_request(&job.chords, &job.key, &plan.info)?;
    request.edit = plan.edit.clone();
    // The first level's draft decoded early: heard long before the full take. (An
    // edit's preview is spliced into the previous take by the engine, like the full take.)
    request.preview_levels = Some(PREVIEW_LEVELS);
    let anchor = plan.anchor;
    let info = plan.info;
    let plan_context = &plan.context;

    let mut on_progress = |p: Progress| {
        check_cancel();
        let (stage, fraction) = match p {
            Progress::Encoding { done, total } => {
                (Stage::Encoding, done as f32 / total.max(1) as f32)
            }
            Progress::Sampling { done, total, .. } => {
                (Stage::Sampling, done as f32 / total.max(1) as f32)
            }
            Progress::Decoding { done, total } => {
                (Stage::Decoding, done as f32 / total.max(1) as f32)
            }
            Progress::Preview { audio, seconds, .. } => {
                if !job.owner.is_closed() {
                    job.owner.play_preview(job.take_id, anchor, &audio);
                    status.preview_seconds.store(seconds);
                }
                return;
            }
        };
        // Overall: encoding 0-5%, sampling 5-90%, decoding 90-100%.
        let overall = match stage {
            Stage::Encoding => 0.05 * fraction,
            Stage::Sampling => 0.05 + 0.85 * fraction,
            _ => 0.9 + 0.1 * fraction,
        };
        status.set(stage, overall);
    };
    check_cancel();
    let stem = generator
        .generate(&request, &mut on_progress, &cancel)
        .map_err(|e| {
            if stemgen::generate::is_cancelled(&e) {
                e
            } else if is_silent(plan_context.channels[0].as_slice()) {
                // The engine's reason is "silent context"; say what to do about it instead.
                anyhow::anyhow!(
                    "the captured context is (nearly) silent: play the song while capturing, \
                     or switch \"Context from\" to the input the music arrives on"
                )
            } else {
                e.context("while generating from the captured context")
            }
        })?;

    status.set(Stage::Writing, 0.99);
    let seconds = status.elapsed();
    let take = Take {
        id: job.take_id,
        name: format!("Take {}", job.take_id),
        path: PathBuf::new(),
        instrument: stem.metadata.category.clone(),
        seed: job.seed,
        preset: job.quality.preset().name().into(),
        cfg_context: job.cfg_context,
        cfg_instrument: job.cfg_instrument,
        tempo: info.tempo,
        time_sig: info.time_sig,
        bars: info.bars,
        start_bar: info.start_bar,
        seconds: info.seconds(),
        sample_rate: info.sample_rate,
        anchor,
        generation_seconds: seconds,
        preview_seconds: Some(status.preview_seconds.load()).filter(|s| s.is_finite()),
        context_takes: plan.context_takes,
        regenerated: job.edit.as_ref().map(|(_, region)| *region),
        device: "cpu".into(),
    };
    let metadata = serde_json::to_value(&stem.metadata)?;
    let written = takes::write_take(&job.takes_dir, take.clone(), &stem.audio, &metadata).and_then(
        |written| {
            take_context::write_context(&written, &plan.context)?;
            Ok(written)
        },
    );
    let take = match written {
        Ok(written) => written,
        Err(e) => {
            // Keep it playing even if it could not be saved; say so.
            job.owner
                .set_message(format!("{e:#} (the take plays but is not saved)"));
            take
        }
    };
    job.owner
        .set_peaks(take.id, take_peaks(Some(&stem.audio), Some(&plan.context)));
    job.owner.add_take(take, stem.audio);
    Ok(())
}

/// What one job generates from: the context, where the take sits, and an edit's region.
struct Plan {
    /// Mono, at the rate the take is made at.
    context: Audio,
    /// The capture (or, for an edit, the edited take) as the take's timing facts.
    info: CaptureInfo,
    anchor: Anchor,
    seconds: f64,
    edit: Option<EditRequest>,
    context_takes: Vec<u64>,
}

/// A new take hears the last capture plus the takes added to the context; an edit hears the
/// edited take's own context and keeps its audio outside the region.
fn plan(job: &GenerationJob) -> Result<Plan> {
    if let Some((take, region)) = &job.edit {
        let range = region.seconds(take).with_context(|| {
            format!(
                "{} has no bars (no tempo when it was made), so bars cannot be re-generated",
                take.name
            )
        })?;
        let previous = stemgen::audio::read_audio(&take.path)
            .with_context(|| format!("{}: cannot read the take", take.path.display()))?;
        let context = take_context::read_context(take)?;
        let info = CaptureInfo {
            start_frame: 0,
            frames: (take.seconds * take.sample_rate as f64).round() as u64,
            sample_rate: take.sample_rate,
            tempo: take.tempo,
            time_sig: take.time_sig,
            bars: take.bars,
            start_beats: take.anchor.start_beats,
            start_samples: take.anchor.start_samples,
            start_bar: take.start_bar,
        };
        return Ok(Plan {
            context: context.to_mono_at(take.sample_rate)?,
            info,
            anchor: take.anchor,
            seconds: take.seconds,
            edit: Some(EditRequest {
                region: range,
                previous: PreviousTake::Audio(previous),
            }),
            context_takes: take.context_takes.clone(),
        });
    }
    let Some(capture) = &job.context else {
        anyhow::bail!("nothing captured yet: arm a capture and play the song first");
    };
    let info = capture.info;
    let samples = take_context::mix_takes(&capture.samples, &info, &job.context_takes)?;
    Ok(Plan {
        context: Audio::mono(info.sample_rate, samples)?,
        info,
        anchor: Anchor {
            start_beats: info.start_beats,
            tempo: info.tempo,
            start_samples: info.start_samples,
            sample_rate: info.sample_rate,
        },
        seconds: info.seconds(),
        edit: None,
        context_takes: job.context_takes.iter().map(|t| t.id).collect(),
    })
}

/// The session's chords and key as the engine takes them; the chart's first bar is the
/// capture's first bar, at the host's tempo and metre when it said them (120 BPM 4/4 if not).
fn harmony_request(chords: &str, key: &str, info: &CaptureInfo) -> Result<HarmonyRequest> {
    let chords = (!chords.trim().is_empty())
        .then(|| ChordChart::parse(chords))
        .transpose()
        .map_err(|e| anyhow::anyhow!("Chords: {e}"))?;
    let key = (!key.trim().is_empty())
        .then(|| parse_key(key))
        .transpose()
        .map_err(|e| anyhow::anyhow!("Key: {e}"))?;
    let beats_per_bar = match info.time_sig {
        Some((num, den)) if num > 0 && den > 0 => ((num * 4) as f64 / den as f64).round() as u32,
        _ => 4,
    };
    Ok(HarmonyRequest {
        chords,
        key,
        tempo: Some((info.tempo.unwrap_or(120.0), beats_per_bar.max(1))),
        ..HarmonyRequest::default()
    })
}

/// Whether the context is below -60 dBFS peak (the engine refuses such a context).
fn is_silent(context: &[f32]) -> bool {
    context.iter().fold(0.0f32, |m, s| m.max(s.abs())) < 1e-3
}

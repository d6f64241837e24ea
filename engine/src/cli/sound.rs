//! `stemgen sound`: the sound-quality measures `stemgen eval` reports per category, for
//! finished stems (a take, a real recording to compare it with), and where the clicks are.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use stemgen::analysis::sound::SoundQuality;
use stemgen::audio;
use stemgen::data::categories::Category;
use stemgen::eval::sound::usual_band;

#[derive(Args)]
pub struct SoundArgs {
    /// Audio files (WAV/FLAC/OGG/MP3, any rate and channel count).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The stems' instrument category (e.g. bass, piano, drums): gives the usual band for the
    /// out-of-band share and whether the tuning means anything.
    #[arg(long)]
    instrument: Option<String>,
    /// Also list when each click happens (seconds from the start).
    #[arg(long)]
    clicks: bool,
}

/// Runs `sound`: one table row per file, then the click times when asked.
pub fn sound(args: SoundArgs) -> Result<()> {
    let category = args
        .instrument
        .as_deref()
        .map(Category::from_name)
        .transpose()?;
    let band = category.and_then(usual_band);
    let pitched = category.is_some_and(|c| c.is_pitched());
    let cell = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
    println!(
        "| file | s | peak dBFS | true peak dBFS | hot-sample share | crest dB | clicks/s | out of band | flatness | active | tuning cents |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut clicks = Vec::new();
    for path in &args.files {
        let audio = audio::read_audio(path)?;
        let (q, times) = SoundQuality::measure_with_click_times(&audio, band, pitched)
            .with_context(|| format!("{}: cannot measure", path.display()))?;
        println!(
            "| {} | {:.2} | {:.1} | {:.1} | {:.5} | {:.1} | {:.2} | {} | {:.3} | {:.2} | {} |",
            path.display(),
            audio.duration_secs(),
            q.peak_dbfs,
            q.true_peak_dbfs,
            q.hot_sample_share,
            q.crest_db,
            q.clicks_per_second,
            cell(q.out_of_band_share, 4),
            q.spectral_flatness,
            q.active_share,
            cell(q.tuning_cents, 1),
        );
        if args.clicks {
            clicks.push((path, times));
        }
    }
    for (path, times) in clicks {
        let list: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
        println!("clicks in {}: {}", path.display(), list.join(" "));
    }
    Ok(())
}

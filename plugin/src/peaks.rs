//! Waveform overviews for the editor: the lowest and highest sample per column of a take and
//! of the context it was generated from. Made once off the GUI thread (by the worker that
//! wrote the take, or the loader for takes of a reopened project), so drawing a take never
//! touches its audio.

/// Columns of an overview; the editor draws them at whatever width it has.
pub const COLUMNS: usize = 1024;

/// Min and max per column over all channels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peaks {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

impl Peaks {
    /// The overview of `channels` (equal lengths) in `columns` columns.
    pub fn of(channels: &[Vec<f32>], columns: usize) -> Peaks {
        let frames = channels.first().map_or(0, Vec::len);
        if frames == 0 || columns == 0 {
            return Peaks::default();
        }
        let mut peaks = Peaks {
            min: vec![0.0; columns],
            max: vec![0.0; columns],
        };
        for ch in channels {
            for (i, &s) in ch.iter().enumerate() {
                if !s.is_finite() {
                    continue;
                }
                let col = i * columns / frames;
                peaks.min[col] = peaks.min[col].min(s);
                peaks.max[col] = peaks.max[col].max(s);
            }
        }
        peaks
    }

    /// The largest magnitude in the overview (for scaling; never zero).
    pub fn peak(&self) -> f32 {
        self.min
            .iter()
            .chain(&self.max)
            .fold(1e-6f32, |m, s| m.max(s.abs()))
    }

    pub fn is_empty(&self) -> bool {
        self.min.is_empty()
    }
}

/// What the editor draws for one take.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TakePeaks {
    pub take: Peaks,
    /// The context it was generated from (absent for takes made before contexts were saved).
    pub context: Option<Peaks>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_hold_the_extremes_of_their_samples() {
        let left: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) / 50.0).collect();
        let right = vec![0.0; 100];
        let p = Peaks::of(&[left, right], 4);
        assert_eq!(p.min.len(), 4);
        assert_eq!(p.min[0], -1.0);
        assert_eq!(p.max[0], 0.0);
        assert_eq!(p.max[3], 49.0 / 50.0);
        assert_eq!(p.min[3], 0.0);
        assert!((p.peak() - 1.0).abs() < 1e-6);
        assert!(Peaks::of(&[], 4).is_empty());
        let with_nan = Peaks::of(&[vec![f32::NAN, 0.5]], 1);
        assert_eq!(with_nan.max[0], 0.5);
    }
}

//! Training and fitting: the RVQ codebooks by k-means on the training clips' shapes, and the
//! decoders fitted on frozen tokens (the [`refine`] filter, the [`joint`] decoder's
//! codewords, the [`postnet`]), none of which changes the tokens.

use anyhow::{ensure, Result};
use rand::SeedableRng;

use super::{analyse, joint, kmeans, postnet, refine, subtract_codewords};
use super::{MagnitudeConfig, MagnitudeTokenizer};
use crate::analysis::stft::Stft;
use crate::audio::Audio;
use crate::codec::{Tokenizer, Tokens};

impl MagnitudeTokenizer {
    /// A clip's tokens and the log-magnitudes they approximate ([`Self::analyse_db`]): what a
    /// decoder fitted on frozen tokens learns from.
    fn tokens_and_truth(&self, clip: &Audio) -> Result<(Tokens, Vec<f32>)> {
        let mono = clip.to_mono_at(self.config.sample_rate)?;
        let truth = self.analyse_db(&mono.channels[0]);
        Ok((self.encode(&mono, &mut crate::codec::no_progress())?, truth))
    }

    /// Trains the RVQ codebooks on `clips` (any rate and channel count; mixed to mono at
    /// `config.sample_rate`). Deterministic for a given seed.
    pub fn train(clips: &[Audio], config: MagnitudeConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let stft = Stft::new(config.n_fft, config.hop);
        let bins = config.bins();
        // Reserved up front: the frames of a few hundred songs take gigabytes, and growing by
        // doubling would briefly hold up to three times that.
        let expected_frames: usize = clips
            .iter()
            .map(|c| {
                let len = c.num_frames() as u64 * config.sample_rate as u64 / c.sample_rate as u64;
                len as usize / config.hop + 2
            })
            .sum();
        let mut data = Vec::with_capacity(expected_frames * bins);
        for clip in clips {
            let mono = clip.to_mono_at(config.sample_rate)?;
            let a = analyse(&config, &stft, &mono.channels[0]);
            data.extend_from_slice(&a.shapes);
        }
        let n = data.len() / bins;
        ensure!(n > 0, "no training audio: the clips hold no frames");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        if n > config.max_train_frames {
            let mut pick =
                rand::seq::index::sample(&mut rng, n, config.max_train_frames).into_vec();
            pick.sort_unstable();
            data = pick
                .iter()
                .flat_map(|&i| data[i * bins..(i + 1) * bins].iter().copied())
                .collect();
        }
        let mut codebooks = Vec::with_capacity(config.levels);
        for q in 0..config.levels {
            let cb = kmeans::kmeans(
                &data,
                bins,
                config.level_size(q),
                config.kmeans_iters,
                &mut rng,
            )?;
            let assign = kmeans::nearest(&data, bins, &cb)?;
            subtract_codewords(&mut data, bins, &cb, &assign);
            codebooks.push(cb);
        }
        let radius = config.refine_radius;
        let mut plain = config;
        plain.refine_radius = None;
        plain.joint_decoder = false;
        plain.postnet = None;
        let plain = Self::from_parts(plain, codebooks, None, None, None)?;
        match radius {
            Some(radius) => plain.with_refinement(clips, radius),
            None => Ok(plain),
        }
    }

    /// The same tokens with a refinement filter of `radius` frames fitted on `clips` (at most
    /// `config.refine_train_frames` frames of them) replacing any the tokenizer had: only the
    /// decoder changes, so token caches and models made with this tokenizer stay valid.
    pub fn with_refinement(self, clips: &[Audio], radius: usize) -> Result<Self> {
        let decoder = self.decoder;
        let mut plain = self.config.clone();
        plain.refine_radius = None;
        // A postnet was trained on the old decode, so it is dropped.
        plain.postnet = None;
        let plain = Self::from_parts(plain, self.codebooks, None, decoder, None)?;
        let mut config = plain.config.clone();
        config.refine_radius = Some(radius);
        let layout = config.refine_layout().expect("radius was just set");
        let bins = config.bins();
        let mut fit = refine::Fit::new(layout, bins);
        let mut frames = 0;
        for clip in clips {
            if frames >= config.refine_train_frames {
                break;
            }
            let (tokens, truth) = plain.tokens_and_truth(clip)?;
            let (full, partial) = plain.sum_codewords(&tokens, true)?;
            let decodes = refine::Decodes {
                full: &full,
                partial: &partial,
                frames: tokens.frames,
                bins,
            };
            fit.add(&decodes, &truth);
            frames += tokens.frames;
        }
        ensure!(frames > 0, "no audio to fit the refinement on");
        let weights = fit.solve()?;
        Self::from_parts(config, plain.codebooks, Some(weights), plain.decoder, None)
    }

    /// The same tokens with joint decoder codewords (see [`joint`]) fitted on every frame of
    /// `clips`, started from and pulled (`ridge` frames) towards the encoder's codewords, with
    /// `sweeps` Gauss-Seidel sweeps. Any refinement filter is dropped (it was fitted to the
    /// old decode). Also returns the fit's RMS error on the clips before and after.
    pub fn with_joint_decoder(
        self,
        clips: &[Audio],
        ridge: f64,
        sweeps: usize,
    ) -> Result<(Self, joint::FitError)> {
        let mut config = self.config.clone();
        config.refine_radius = None;
        config.joint_decoder = false;
        config.postnet = None;
        let plain = Self::from_parts(config.clone(), self.codebooks, None, None, None)?;
        let (bins, size) = (config.bins(), config.codebook_size);
        let mut fit = joint::JointFit::new(config.levels, size, bins);
        for clip in clips {
            let (tokens, truth) = plain.tokens_and_truth(clip)?;
            fit.add(&tokens, &truth)?;
        }
        ensure!(fit.frames() > 0, "no audio to fit the joint decoder on");
        let init = plain.encoder_codewords();
        let solved = fit.solve(&init, ridge, sweeps)?;
        config.joint_decoder = true;
        let tok = Self::from_parts(config, plain.codebooks, None, Some(solved.codewords), None)?;
        Ok((tok, solved.error))
    }

    /// The same tokens and decoder with a [`postnet`] trained on `clips` to correct the
    /// decode (replacing any postnet the tokenizer had): only the decoder changes, so token
    /// caches and models made with this tokenizer stay valid.
    pub fn with_postnet(
        self,
        clips: &[Audio],
        options: &postnet::TrainOptions,
        progress: impl FnMut(&str),
    ) -> Result<(Self, postnet::TrainReport)> {
        let mut config = self.config.clone();
        config.postnet = None;
        let base = Self::from_parts(config, self.codebooks, self.refine, self.decoder, None)?;
        let examples = clips
            .iter()
            .map(|clip| {
                let (tokens, truth_db) = base.tokens_and_truth(clip)?;
                let decode_db = base.decode_db(&tokens)?;
                Ok(postnet::Example {
                    tokens,
                    decode_db,
                    truth_db,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (tensors, report) = postnet::train(
            &examples,
            base.config.bins(),
            base.config.codebook_size,
            options,
            progress,
        )?;
        drop(examples);
        let mut config = base.config.clone();
        config.postnet = Some(options.config);
        let tok = Self::from_parts(
            config,
            base.codebooks,
            base.refine,
            base.decoder,
            Some(tensors),
        )?;
        Ok((tok, report))
    }

    /// What the plain decoder adds per token of every level, `[levels][codebook_size * bins]`
    /// (level 0: the token's gain plus its shape codeword; levels 1..: the codebooks, padded
    /// with copies of the last codeword if a level is smaller).
    fn encoder_codewords(&self) -> Vec<Vec<f32>> {
        let c = &self.config;
        let (bins, s0) = (c.bins(), c.level0_shapes());
        (0..c.levels)
            .map(|q| {
                (0..c.codebook_size)
                    .flat_map(|code| {
                        let (row, gain) = if q == 0 {
                            (code % s0, c.gain_db(code / s0))
                        } else {
                            (code.min(c.level_size(q) - 1), 0.0)
                        };
                        self.codebooks[q][row * bins..(row + 1) * bins]
                            .iter()
                            .map(move |&v| v + gain)
                    })
                    .collect()
            })
            .collect()
    }
}

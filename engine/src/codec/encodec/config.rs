//! EnCodec hyper-parameters, in the field names of Hugging Face's `EncodecConfig`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EncodecConfig {
    pub sampling_rate: u32,
    pub audio_channels: usize,
    pub num_filters: usize,
    /// Decoder upsampling ratios; the encoder downsamples by them in reverse order.
    pub upsampling_ratios: Vec<usize>,
    pub codebook_size: usize,
    /// Latent width (= codebook dimension).
    pub hidden_size: usize,
    pub num_lstm_layers: usize,
    pub use_causal_conv: bool,
    /// "reflect" (MusicGen) or "constant".
    pub pad_mode: String,
    pub compress: usize,
    pub residual_kernel_size: usize,
    pub dilation_growth_rate: usize,
    pub kernel_size: usize,
    pub last_kernel_size: usize,
    pub num_residual_layers: usize,
    pub trim_right_ratio: f64,
    pub norm_type: String,
    pub use_conv_shortcut: bool,
    pub normalize: bool,
    /// Number of RVQ levels; when absent it follows from the largest target bandwidth.
    pub num_quantizers: Option<usize>,
    pub target_bandwidths: Vec<f64>,
}

impl Default for EncodecConfig {
    fn default() -> Self {
        Self::encodec_32khz()
    }
}

impl EncodecConfig {
    /// MusicGen's compression model (`facebook/encodec_32khz`): 32 kHz mono, 64 filters,
    /// ratios 8-5-4-4, 2 LSTM layers, 4 x 2048 codes at 50 Hz.
    pub fn encodec_32khz() -> Self {
        EncodecConfig {
            sampling_rate: 32_000,
            audio_channels: 1,
            num_filters: 64,
            upsampling_ratios: vec![8, 5, 4, 4],
            codebook_size: 2048,
            hidden_size: 128,
            num_lstm_layers: 2,
            use_causal_conv: false,
            pad_mode: "reflect".into(),
            compress: 2,
            residual_kernel_size: 3,
            dilation_growth_rate: 2,
            kernel_size: 7,
            last_kernel_size: 7,
            num_residual_layers: 1,
            trim_right_ratio: 1.0,
            norm_type: "weight_norm".into(),
            use_conv_shortcut: false,
            normalize: false,
            num_quantizers: None,
            target_bandwidths: vec![2.2],
        }
    }

    pub fn hop_length(&self) -> usize {
        self.upsampling_ratios.iter().product()
    }

    pub fn frame_rate(&self) -> f64 {
        (self.sampling_rate as f64 / self.hop_length() as f64).ceil()
    }

    pub fn num_quantizers(&self) -> usize {
        self.num_quantizers.unwrap_or_else(|| {
            let bw = self.target_bandwidths.iter().cloned().fold(0.0, f64::max);
            (1000.0 * bw / (self.frame_rate() * 10.0)).floor() as usize
        })
    }

    /// Reads a config JSON: ours, Hugging Face's `config.json` of an EnCodec model, or a
    /// MusicGen `config.json` whose `audio_encoder` section is the EnCodec config.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let section = value.get("audio_encoder").cloned().unwrap_or(value);
        Ok(serde_json::from_value(section)?)
    }

    /// Rejects configurations this implementation does not cover.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.audio_channels == 1,
            "only mono EnCodec models are supported"
        );
        anyhow::ensure!(
            !self.normalize,
            "EnCodec models with `normalize` are not supported"
        );
        anyhow::ensure!(
            self.norm_type == "weight_norm",
            "norm_type '{}' is not supported (only weight_norm)",
            self.norm_type
        );
        anyhow::ensure!(
            matches!(self.pad_mode.as_str(), "reflect" | "constant" | "zeros"),
            "pad_mode '{}' is not supported",
            self.pad_mode
        );
        anyhow::ensure!(
            !self.upsampling_ratios.is_empty() && self.num_quantizers() > 0,
            "config has no upsampling ratios or no quantizers"
        );
        Ok(())
    }
}

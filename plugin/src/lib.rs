//! The StemGen plugin (VST3 + CLAP). At this stage it is the I/O shell a producer inserts on a
//! track: stereo main in/out plus a stereo sidechain for the context, with the main input
//! passed through at a trim level. Capture, generation and playback arrive on top of it.

use nice_plug::prelude::*;
use std::sync::Arc;

pub struct StemGen {
    params: Arc<StemGenParams>,
}

#[derive(Params)]
pub struct StemGenParams {
    /// Level of the main input passed through to the output.
    #[id = "thru"]
    pub thru_gain: FloatParam,
}

impl Default for StemGenParams {
    fn default() -> Self {
        StemGenParams {
            thru_gain: FloatParam::new(
                "Input level",
                util::db_to_gain(0.0),
                FloatRange::Skewed {
                    min: util::db_to_gain(-60.0),
                    max: util::db_to_gain(6.0),
                    factor: FloatRange::gain_skew_factor(-60.0, 6.0),
                },
            )
            .with_smoother(SmoothingStyle::Logarithmic(20.0))
            .with_unit(" dB")
            .with_value_to_string(formatters::v2s_f32_gain_to_db(1))
            .with_string_to_value(formatters::s2v_f32_gain_to_db()),
        }
    }
}

impl Default for StemGen {
    fn default() -> Self {
        StemGen {
            params: Arc::new(StemGenParams::default()),
        }
    }
}

impl Plugin for StemGen {
    const NAME: &'static str = "StemGen";
    const VENDOR: &'static str = "StemGen";
    const URL: &'static str = "https://example.invalid/stemgen";
    const EMAIL: &'static str = "stemgen@example.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[AudioIOLayout {
        main_input_channels: NonZeroU32::new(2),
        main_output_channels: NonZeroU32::new(2),
        aux_input_ports: &[new_nonzero_u32(2)],
        names: PortNames {
            layout: Some("Stereo + context sidechain"),
            main_input: Some("Input"),
            main_output: Some("Output"),
            aux_inputs: &["Context"],
            aux_outputs: &[],
        },
        ..AudioIOLayout::const_default()
    }];

    type Editor = ();
    type SysExMessage = ();
    type BackgroundTask = ();

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        _context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        for mut frame in buffer.iter_samples() {
            let gain = self.params.thru_gain.smoothed.next();
            for sample in frame.iter_mut() {
                *sample *= gain;
            }
        }
        ProcessStatus::Normal
    }
}

impl ClapPlugin for StemGen {
    const CLAP_ID: &'static str = "org.stemgen.stemgen";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("Generates an instrument stem that fits the music on the track");
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[
        ClapFeature::AudioEffect,
        ClapFeature::Stereo,
        ClapFeature::Utility,
    ];
}

impl Vst3Plugin for StemGen {
    const VST3_CLASS_ID: [u8; 16] = *b"StemGenPluginV01";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Fx, Vst3SubCategory::Generator];
}

nice_export_clap!(StemGen);
nice_export_vst3!(StemGen);

//! The plugin's parameters (host-automatable) and its persisted state.

use std::sync::Arc;

use nice_plug::prelude::*;
use stemgen::data::categories::Category;
use stemgen::sample::Preset;

use crate::takes::SessionStore;

/// Where the context comes from.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextInput {
    /// The track's own input (plugin on a bus or on the mix).
    #[name = "Main input"]
    Main,
    /// The sidechain (plugin on an empty track with the mix sent to it).
    #[name = "Sidechain"]
    Sidechain,
}

/// How many bars a capture takes.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureLength {
    #[name = "4 bars"]
    Bars4,
    #[name = "8 bars"]
    Bars8,
    #[name = "16 bars"]
    Bars16,
    #[name = "Custom"]
    Custom,
}

/// Sampler quality presets (engine presets; see `stemgen::sample::Preset`).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    #[name = "Draft"]
    Draft,
    #[name = "Normal"]
    Normal,
    #[name = "Paper"]
    Paper,
}

impl Quality {
    pub fn preset(self) -> Preset {
        match self {
            Quality::Draft => Preset::Draft,
            Quality::Normal => Preset::Normal,
            Quality::Paper => Preset::Paper,
        }
    }
}

/// Longest custom capture in bars (the capture buffer holds [`crate::capture::MAX_CAPTURE_SECONDS`]).
pub const MAX_CUSTOM_BARS: i32 = 32;

#[derive(Params)]
pub struct StemGenParams {
    #[id = "source"]
    pub context_input: EnumParam<ContextInput>,
    /// Level of the main input passed through to the output.
    #[id = "thru"]
    pub thru_gain: FloatParam,
    /// Level of the playing take.
    #[id = "stemlvl"]
    pub stem_gain: FloatParam,
    /// Only the take (the main input is not passed through).
    #[id = "solo"]
    pub solo: BoolParam,
    /// Silences the take.
    #[id = "mute"]
    pub mute: BoolParam,

    #[id = "caplen"]
    pub capture_length: EnumParam<CaptureLength>,
    #[id = "capbars"]
    pub custom_bars: IntParam,
    /// A rising edge arms a capture (or, with the transport stopped, takes the last bars
    /// heard); lets hosts and controllers trigger it like the editor's button.
    #[id = "capture"]
    pub capture_trigger: BoolParam,
    /// Start generating as soon as a capture finishes.
    #[id = "autogen"]
    pub auto_generate: BoolParam,
    /// A rising edge starts a generation (the editor's Generate button, for hosts and
    /// controllers): from the last capture, or of the bars selected on a take.
    #[id = "generate"]
    pub generate_trigger: BoolParam,

    /// Category id of the instrument to generate.
    #[id = "instr"]
    pub instrument: IntParam,
    #[id = "cfgctx"]
    pub cfg_context: FloatParam,
    #[id = "cfginst"]
    pub cfg_instrument: FloatParam,
    #[id = "quality"]
    pub quality: EnumParam<Quality>,

    /// Takes, folders and the next seed.
    #[persist = "session"]
    pub session: SessionStore,
}

fn gain_param(name: &str, default_db: f32) -> FloatParam {
    FloatParam::new(
        name,
        util::db_to_gain(default_db),
        FloatRange::Skewed {
            min: util::db_to_gain(-60.0),
            max: util::db_to_gain(6.0),
            factor: FloatRange::gain_skew_factor(-60.0, 6.0),
        },
    )
    .with_smoother(SmoothingStyle::Logarithmic(20.0))
    .with_unit(" dB")
    .with_value_to_string(formatters::v2s_f32_gain_to_db(1))
    .with_string_to_value(formatters::s2v_f32_gain_to_db())
}

fn guidance_param(name: &str) -> FloatParam {
    FloatParam::new(
        name,
        3.0,
        FloatRange::Linear {
            min: 0.0,
            max: 10.0,
        },
    )
    .with_step_size(0.1)
    .with_value_to_string(formatters::v2s_f32_rounded(1))
}

impl Default for StemGenParams {
    fn default() -> Self {
        let categories = Category::all().count() as i32;
        StemGenParams {
            context_input: EnumParam::new("Context from", ContextInput::Main),
            thru_gain: gain_param("Input level", 0.0),
            stem_gain: gain_param("Stem level", 0.0),
            solo: BoolParam::new("Stem only", false),
            mute: BoolParam::new("Mute stem", false),
            capture_length: EnumParam::new("Capture length", CaptureLength::Bars8),
            custom_bars: IntParam::new(
                "Custom bars",
                8,
                IntRange::Linear {
                    min: 1,
                    max: MAX_CUSTOM_BARS,
                },
            ),
            capture_trigger: BoolParam::new("Capture", false),
            auto_generate: BoolParam::new("Generate after capture", true),
            generate_trigger: BoolParam::new("Generate", false),
            instrument: IntParam::new(
                "Instrument",
                Category::Bass.id() as i32,
                IntRange::Linear {
                    min: 0,
                    max: categories - 1,
                },
            )
            .with_value_to_string(Arc::new(|id| {
                Category::from_id(id as u32).map_or_else(|| id.to_string(), |c| c.name().into())
            }))
            .with_string_to_value(Arc::new(|name| {
                Category::from_name(name.trim()).ok().map(|c| c.id() as i32)
            })),
            cfg_context: guidance_param("Context guidance"),
            cfg_instrument: guidance_param("Instrument guidance"),
            quality: EnumParam::new("Quality", Quality::Normal),
            session: SessionStore::default(),
        }
    }
}

impl StemGenParams {
    /// Bars one capture takes, from the length choice.
    pub fn capture_bars(&self) -> f64 {
        match self.capture_length.value() {
            CaptureLength::Bars4 => 4.0,
            CaptureLength::Bars8 => 8.0,
            CaptureLength::Bars16 => 16.0,
            CaptureLength::Custom => self.custom_bars.value() as f64,
        }
    }

    pub fn instrument_name(&self) -> String {
        let id = self.instrument.value() as u32;
        Category::from_id(id).map_or_else(|| format!("category-{id}"), |c| c.name().into())
    }
}

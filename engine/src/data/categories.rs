//! The instrument categories `c` that condition the model (ARCHITECTURE §3.1).
//!
//! The set is the 16 General MIDI program families (the same taxonomy as Slakh2100's
//! `inst_class` labels) plus drums and vocals: 18 categories, the count the StemGen paper uses
//! and the default `n_categories` of the model config. Ids are stable: they are the category
//! embedding rows of trained models, so never renumber them; add new categories at the end.
//!
//! [`CATEGORY_TABLE`] is the one table that names every category: id, command-line name, the
//! Slakh label and the GM program range. Dataset loaders map their own labels onto it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// An instrument category. The discriminant is the stable id (`Category::id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum Category {
    Piano = 0,
    ChromaticPercussion = 1,
    Organ = 2,
    Guitar = 3,
    Bass = 4,
    Strings = 5,
    /// GM programs 48-55 (string/choir ensembles, orchestra hit); Slakh calls it
    /// "Strings (continued)".
    Ensemble = 6,
    Brass = 7,
    Reed = 8,
    Pipe = 9,
    SynthLead = 10,
    SynthPad = 11,
    SynthEffects = 12,
    Ethnic = 13,
    Percussive = 14,
    SoundEffects = 15,
    /// Drum kits (GM channel 10).
    Drums = 16,
    /// Sung voice (real datasets only; General MIDI has no vocal programs).
    Vocals = 17,
}

/// One row of the category table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CategoryInfo {
    pub category: Category,
    /// Lower-case command-line name, also used as the stem file name (`bass.wav`).
    pub name: &'static str,
    /// The label Slakh2100's `metadata.yaml` uses (`inst_class`).
    pub slakh_label: &'static str,
    /// General MIDI programs (0-based) of the family; `None` for drums and vocals.
    pub gm_programs: Option<(u8, u8)>,
}

const fn row(
    category: Category,
    name: &'static str,
    slakh_label: &'static str,
    gm_programs: Option<(u8, u8)>,
) -> CategoryInfo {
    CategoryInfo {
        category,
        name,
        slakh_label,
        gm_programs,
    }
}

/// Every category, in id order.
pub const CATEGORY_TABLE: [CategoryInfo; Category::COUNT] = [
    row(Category::Piano, "piano", "Piano", Some((0, 7))),
    row(
        Category::ChromaticPercussion,
        "chromatic-percussion",
        "Chromatic Percussion",
        Some((8, 15)),
    ),
    row(Category::Organ, "organ", "Organ", Some((16, 23))),
    row(Category::Guitar, "guitar", "Guitar", Some((24, 31))),
    row(Category::Bass, "bass", "Bass", Some((32, 39))),
    row(Category::Strings, "strings", "Strings", Some((40, 47))),
    row(
        Category::Ensemble,
        "ensemble",
        "Strings (continued)",
        Some((48, 55)),
    ),
    row(Category::Brass, "brass", "Brass", Some((56, 63))),
    row(Category::Reed, "reed", "Reed", Some((64, 71))),
    row(Category::Pipe, "pipe", "Pipe", Some((72, 79))),
    row(
        Category::SynthLead,
        "synth-lead",
        "Synth Lead",
        Some((80, 87)),
    ),
    row(Category::SynthPad, "synth-pad", "Synth Pad", Some((88, 95))),
    row(
        Category::SynthEffects,
        "synth-effects",
        "Synth Effects",
        Some((96, 103)),
    ),
    row(Category::Ethnic, "ethnic", "Ethnic", Some((104, 111))),
    row(
        Category::Percussive,
        "percussive",
        "Percussive",
        Some((112, 119)),
    ),
    row(
        Category::SoundEffects,
        "sound-effects",
        "Sound Effects",
        Some((120, 127)),
    ),
    row(Category::Drums, "drums", "Drums", None),
    row(Category::Vocals, "vocals", "Vocals", None),
];

/// A category name that is not in the table; the message lists the valid names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown instrument category '{given}'; valid names: {}",
    Category::valid_names()
)]
pub struct UnknownCategory {
    pub given: String,
}

impl Category {
    /// Number of categories (not counting the model's NULL category).
    pub const COUNT: usize = 18;

    /// All categories in id order.
    pub fn all() -> impl Iterator<Item = Category> {
        CATEGORY_TABLE.iter().map(|r| r.category)
    }

    /// The stable id (embedding row).
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The category with id `id`, if any.
    pub fn from_id(id: u32) -> Option<Category> {
        CATEGORY_TABLE.get(id as usize).map(|r| r.category)
    }

    pub fn info(self) -> &'static CategoryInfo {
        &CATEGORY_TABLE[self as usize]
    }

    /// Lower-case command-line name (also the stem file stem: `bass` -> `bass.wav`).
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Slakh2100's `inst_class` label.
    pub fn slakh_label(self) -> &'static str {
        self.info().slakh_label
    }

    /// Whether the family plays pitches a chord or key applies to (not drums, percussive
    /// instruments or sound effects).
    pub fn is_pitched(self) -> bool {
        !matches!(
            self,
            Category::Drums | Category::Percussive | Category::SoundEffects
        )
    }

    /// Whether its notes sound on after their attack (pitched, and not sound effects, many
    /// of which are hits): the sampler draws such an instrument's attacks with their notes
    /// (`SamplerSettings::hold_notes`).
    pub fn sustains_notes(self) -> bool {
        self.is_pitched() && self != Category::SynthEffects
    }

    /// The GM programs (0-based) of this family; `None` for drums and vocals.
    pub fn gm_programs(self) -> Option<RangeInclusive<u8>> {
        self.info().gm_programs.map(|(a, b)| a..=b)
    }

    /// The family of a melodic (non-drum) GM program, 0-127. Programs above 127 are clamped.
    pub fn from_gm_program(program: u8) -> Category {
        CATEGORY_TABLE[(program.min(127) / 8) as usize].category
    }

    /// Looks a category up by command-line name. Case, spaces and underscores are forgiven
    /// (`"Synth Lead"`, `"synth_lead"`, `"SYNTH-LEAD"`); Slakh labels are accepted too.
    pub fn from_name(name: &str) -> Result<Category, UnknownCategory> {
        let norm = normalise(name);
        CATEGORY_TABLE
            .iter()
            .find(|r| r.name == norm || normalise(r.slakh_label) == norm)
            .map(|r| r.category)
            .ok_or_else(|| UnknownCategory {
                given: name.to_string(),
            })
    }

    /// The valid names, comma separated, for messages.
    pub fn valid_names() -> String {
        CATEGORY_TABLE
            .iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn normalise(name: &str) -> String {
    name.trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '_' { '-' } else { c })
        .collect()
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Category {
    type Err = UnknownCategory;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::from_name(s)
    }
}

//! The standalone StemGen application: the plugin with its editor, on JACK/ALSA or the dummy
//! audio backend (`stemgen-standalone --backend dummy` needs no audio hardware).

use nice_plug::prelude::*;
use stemgen_plugin::StemGen;

fn main() {
    nice_export_standalone::<StemGen>();
}

//! `cargo xtask bundle <package> [--release]`: builds the plugin and lays out the `.vst3` and
//! `.clap` bundles under `target/bundled/` (nice-plug-xtask does the platform specifics).
fn main() -> nice_plug_xtask::Result<()> {
    nice_plug_xtask::main()
}

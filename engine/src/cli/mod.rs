//! The `stemgen` subcommands, one module per command group: each holds its group's clap
//! argument types next to the functions that run them. `main.rs` only parses and dispatches.
//!
//! The clap `Args` structs carry no `///` doc comment on purpose: clap would take it as the
//! subcommand's about text, which is the doc comment of the subcommand's enum variant.

pub mod bench;
pub mod codec;
mod common;
pub mod data;
pub mod eval;
pub mod generate;
pub mod info;
pub mod sound;
pub mod train;

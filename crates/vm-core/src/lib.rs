//! beamvm's core: a BEAM-class process virtual machine in pure Rust.
pub mod term;

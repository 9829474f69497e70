//! Small helpers that every layer shares and none owns.

pub mod errors;
pub mod rng;
pub mod stats;

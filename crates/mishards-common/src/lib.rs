//! Small helpers that every layer shares and none owns.

pub mod rng;
pub mod stats;

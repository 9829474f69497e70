//! The tools around the cluster: the embedded demo cluster, the load generator (`mishards bench`) and the
//! chaos scenarios (`mishards chaos run`). They drive the gateway and the nodes as a user would, so this
//! crate sits above both.

pub mod bench;
pub mod chaos;
pub mod demo;

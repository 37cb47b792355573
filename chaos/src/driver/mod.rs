//! The drill driver: network namespaces, the process cluster, nemeses,
//! workload, the view collector and the report. Binary-only: it starts
//! processes and changes the host's network, which the library never does.

pub mod cluster;
pub mod collect;
pub mod drill;
pub mod nemesis;
pub mod netns;
pub mod workload;

//! faultline's agent: it acts on the machine it runs on. It supervises the processes of
//! a topology and (in later layers) injects faults into them and the network between
//! them, behind a control API.
//!
//! # Layout
//!
//! - [`topology`]: topology files, parsed and validated with `file:line:column` errors.
//! - [`supervisor`]: starts, probes, restarts and signals replica processes.
//! - [`rundir`]: the run directory (logs, status file) and where the latest one is.
//! - [`report`]: the ready line and status table printed by the binaries.
//! - [`diag`]: located errors in input files.

pub mod agent;
pub mod api;
pub mod client;
pub mod diag;
pub mod faults;
pub mod http_server;
pub mod json;
pub mod metrics;
pub mod proxy;
pub mod report;
pub mod rundir;
pub mod supervisor;
pub mod topology;

//! faultline's agent: it acts on the machine it runs on. It supervises the processes of
//! a topology, runs a fault proxy on every edge between them, injects faults into the
//! processes and the network as leases it journals, and serves all of it behind a
//! control API. `faultline up` embeds one; the `faultline-agent` binary runs one alone.
//!
//! # Layout
//!
//! - [`agent`]: the supervisor, proxies, fault engine and API started and stopped as one.
//! - [`topology`]: topology files, parsed and validated with `file:line:column` errors.
//! - [`supervisor`]: starts, probes, restarts and signals replica processes; who pauses
//!   and who holds each replica.
//! - [`proxy`]: the fault proxy of an edge: its pumps, toxics and HTTP framing.
//! - [`faults`]: the fault engine: the kinds' descriptions, requests, target
//!   resolution, leases, the journal.
//! - [`api`]: the control API's routes; [`client`]: its typed client;
//!   [`http_server`]: the server under it, with its limits; [`json`]: strict request
//!   bodies.
//! - [`toxiproxy`]: Toxiproxy's HTTP API over run-time proxies and faults.
//! - [`metrics`]: the agent's `/metrics`.
//! - [`reaper`]: the process that kills what replicas left once their agent is gone,
//!   however it died.
//! - [`rundir`]: the run directory (logs, status file, journal) and where the latest is.
//! - [`report`]: the ready line, the status table and the stop signals of the binaries.
//! - [`diag`]: located errors in input files.

pub mod agent;
pub mod api;
pub mod client;
pub mod container_reaper;
pub mod diag;
pub mod faults;
pub mod http_server;
pub mod json;
pub mod metrics;
pub mod proxy;
pub mod reaper;
pub mod report;
pub mod rundir;
pub mod supervisor;
pub mod topology;
pub mod toxiproxy;

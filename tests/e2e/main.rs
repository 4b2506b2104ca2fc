//! End-to-end tests through real processes and sockets.

mod checks;
mod compose;
mod containers;
mod contract;
mod docker_runtime;
mod external;
mod faults;
mod hardening;
mod images;
mod kubernetes;
mod multi_host;
mod own_system;
mod process_tree;
mod procs;
mod prometheus;
mod run;
mod scaling;
mod shop_data;
mod shop_hardening;
mod shop_logs;
mod shop_sync;
mod store_failover;
mod supervisor;
mod toxiproxy;
mod tui;
mod up;

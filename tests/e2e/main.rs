//! End-to-end tests through real processes and sockets.

mod faults;
mod hardening;
mod process_tree;
mod prometheus;
mod run;
mod shop_data;
mod shop_hardening;
mod shop_sync;
mod supervisor;
mod tui;
mod up;

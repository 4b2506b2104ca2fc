//! One module per command.

pub mod check;
pub mod completions;
pub mod dashboards;
pub mod fault;
pub mod heal;
pub mod images;
pub mod load;
pub mod proxy;
pub mod run;
pub mod scale;
pub mod slo;
pub mod status;
pub mod tui;
pub mod up;
pub mod worker;

//! One module per command.

pub mod check;
pub mod fault;
pub mod heal;
pub mod load;
pub mod run;
pub mod status;
pub mod tui;
pub mod up;

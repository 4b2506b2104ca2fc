//! One module per command.

pub mod fault;
pub mod heal;
pub mod status;
pub mod up;

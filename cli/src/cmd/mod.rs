//! One module per command.

pub mod fault;
pub mod heal;
pub mod load;
pub mod status;
pub mod up;

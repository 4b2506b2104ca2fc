//! One module per command.

pub mod up;

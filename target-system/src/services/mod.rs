//! One module per shop service; each exposes its clap `Args` and `run`.

pub mod api;
pub mod auth;
pub mod bank;
pub mod broker;
pub mod cache;
pub mod catalog;
pub mod cdn;
pub mod content;
pub mod gateway;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod store;

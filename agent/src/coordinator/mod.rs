//! The coordinator (`rollgate coordinator`).

pub mod config;

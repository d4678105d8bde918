//! The rollout as the coordinator runs it: the pure core (plans, the state
//! machine, their rendering) lives in the `rollgate-core` crate and is
//! re-exported here; this module adds what touches the world.
//!
//! - [`plan`], [`machine`], [`render`]: re-exported from `rollgate_core`.
//! - [`health`]: Consul's health answer mapped to what the machine reads.
//! - [`executor`]: drives a rollout: observe, step, act, persist.
//! - [`informer`]: the groups being rolled out and their members, read
//!   from AWS in the background (one read for all), for the executor's
//!   observations.
//! - [`follower`]: the service's health and operator commands followed in
//!   Consul with blocking queries, for the same observations.
//! - [`store`]: plans, triggers and rollout state in Consul KV, written with
//!   check-and-set.

pub mod executor;
pub mod follower;
pub mod health;
pub mod informer;
pub mod store;

pub use rollgate_core::{machine, plan, render};

//! The rollout: plan, approval, the pure state machine, the executor.
//!
//! - [`plan`]: what runs against what would run, and the decision on it (pure).
//! - [`render`]: plans as operators read them (`rollgate plan`).
//! - [`store`]: plans, triggers and rollout state in Consul KV, written with
//!   check-and-set.

pub mod plan;
pub mod render;
pub mod store;

//! The rollout: plan, approval, the pure state machine, the executor.
//!
//! - [`plan`]: what runs against what would run, and the decision on it (pure).
//! - [`machine`]: the pure rollout state machine: (state, observation, now)
//!   to (next state, actions); no I/O.
//! - [`executor`]: drives a rollout: observe, step, act, persist.
//! - [`render`]: plans as operators read them (`rollgate plan`).
//! - [`store`]: plans, triggers and rollout state in Consul KV, written with
//!   check-and-set.

pub mod executor;
pub mod machine;
pub mod plan;
pub mod render;
pub mod store;

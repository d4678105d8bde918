//! The rollout core of rollgate: what a rollout is, decided without I/O.
//!
//! - [`params`]: the rollout parameters ([`Params`]), one type for the
//!   configuration, plans and running rollouts.
//! - [`fleet`]: the plain data the core reasons over: an Auto Scaling group,
//!   its members, EC2 instances, a launch template version, a registry image.
//! - [`health`]: a Consul check's status, as the gate reads it.
//! - [`plan`]: what runs against what would run, the planner's verdict and
//!   the operator's decision; [`plan::Outcome`] says how a rollout ended.
//! - [`machine`]: the rollout state machine, `(state, observation, now)` to
//!   `(next state, actions)`.
//!
//! What this crate must never do: perform I/O, read a clock (except the one
//! helper [`plan::now_ms`] callers use at the edge), or depend on the
//! product's configuration, Consul or AWS modules. It is a separate crate so
//! the compiler enforces that: `rollgate` depends on it, never the other way
//! round. Everything here is exercised by fast unit tests with a fake clock.

pub mod fleet;
pub mod health;
pub mod machine;
pub mod params;
pub mod plan;
pub mod render;

pub use params::Params;

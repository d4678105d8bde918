//! Unit tests: whole rollouts against a fake world with a fake clock
//! (`world`), and focused tests of single steps.
#![allow(clippy::unwrap_used)]

mod base;
mod crash;
mod fail_fast;
mod failures;
mod gaps;
mod operators;
mod rollouts;
mod serde_roundtrip;
mod stale;
mod steps;
mod template_change;
mod timeline;
mod world;

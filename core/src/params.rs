//! The rollout parameters (the README's rollout rules): one type
//! for the configuration, the plan and the running rollout.
//!
//! In KV records durations are whole milliseconds (`"min_healthy_time_ms"`)
//! so a stored record does not depend on how the configuration spells
//! durations, and fields missing from an older record take their defaults:
//! a parameter added by a newer release never makes an older record
//! unreadable. The configuration file spells the same fields as durations
//! (`"10s"`); `rollgate`'s configuration module reads that form into this
//! type, never the other way round.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::machine::millis;

/// The rollout parameters (the README's rollout rules), as the
/// machine persists them: durations in milliseconds, so a stored state does
/// not depend on how the configuration spells durations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Params {
    /// New instances launched per batch (Nomad `max_parallel`); 0 is read
    /// as 1, so a bad value cannot stall a rollout.
    pub batch_size: u32,
    /// How long a new instance must pass, without interruption, to count as
    /// healthy; any non-passing observation restarts its timer.
    #[serde(rename = "min_healthy_time_ms", with = "millis")]
    pub min_healthy_time: Duration,
    /// A new instance not healthy this long after it was first seen fails
    /// the rollout.
    #[serde(rename = "healthy_deadline_ms", with = "millis")]
    pub healthy_deadline: Duration,
    /// A new instance answering clearly wrong (a critical check while none
    /// of its checks is still warning: see [`crate::health`]) this long
    /// without interruption fails its batch at once, instead of at
    /// `healthy_deadline`. An instance not answering yet (booting, however
    /// slowly) is never failed by it. Zero turns failing fast off.
    ///
    /// A record written before this parameter existed reads as zero: its
    /// rollout keeps the rules it started with (its instances' agents may
    /// report "not answering yet" as critical).
    #[serde(
        rename = "failure_time_ms",
        with = "millis",
        default = "failure_time_unset"
    )]
    pub failure_time: Duration,
    /// Starts with the rollout and restarts whenever an instance becomes
    /// healthy; expiry fails the rollout (a stuck rollout must not hang).
    #[serde(rename = "progress_deadline_ms", with = "millis")]
    pub progress_deadline: Duration,
    /// Launch this many first and pause until promoted; 0 = no canary.
    pub canary: u32,
    /// Promote the canary without an operator once it has been healthy for
    /// `bake_time`.
    pub auto_promote: bool,
    /// After the last batch (and before auto-promoting a canary), keep
    /// watching this long before declaring success.
    #[serde(rename = "bake_time_ms", with = "millis")]
    pub bake_time: Duration,
    /// On failure, return the group to the stable version; when false the
    /// rollout stops where it failed, for an operator to look (and abort).
    pub auto_revert: bool,
}

impl Default for Params {
    /// The documented defaults (config/rollgate.toml).
    fn default() -> Self {
        Self {
            batch_size: 1,
            min_healthy_time: Duration::from_secs(10),
            healthy_deadline: Duration::from_secs(300),
            // Longer than one agent probe interval plus its timeout (5 s +
            // 2 s by default), so one bad answer followed by a good one never
            // fails a batch: it takes two bad answers in a row. Shorter than
            // 10 s, so a broken image is being reverted within 10 s of its
            // first bad answer.
            failure_time: Duration::from_secs(8),
            progress_deadline: Duration::from_secs(600),
            canary: 0,
            auto_promote: false,
            bake_time: Duration::ZERO,
            auto_revert: true,
        }
    }
}

impl Params {
    /// The batch size, at least 1.
    pub fn batch(&self) -> u32 {
        self.batch_size.max(1)
    }

    /// `failure_time`, unless failing fast is turned off (zero).
    pub fn fail_fast(&self) -> Option<Duration> {
        (!self.failure_time.is_zero()).then_some(self.failure_time)
    }
}

/// `failure_time` of a record that predates it: off.
fn failure_time_unset() -> Duration {
    Duration::ZERO
}

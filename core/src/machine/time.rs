//! Time as the machine sees it: always given, never read.
//!
//! The machine never calls a clock: the executor passes `now`, and tests pass
//! a fake one. Instants are milliseconds since the Unix epoch so a persisted
//! state (JSON in Consul KV) means the same after a restart or on another
//! coordinator; durations persist as milliseconds too.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// An instant, in milliseconds since the Unix epoch.
///
/// A newtype rather than `SystemTime` because it must serialise as a plain
/// number (the same unit as the plan's `Millis`) and compare without a clock.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// From milliseconds since the epoch (what `plan::now_ms` returns).
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating: a huge deadline means "never", not a panic.
    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(millis_of(d)))
    }

    /// How long after `earlier` this is; zero when it is not after it.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl From<SystemTime> for Timestamp {
    /// A conversion, not a clock read: the executor reads its clock and
    /// converts. Times before the epoch become the epoch.
    fn from(t: SystemTime) -> Self {
        Self(
            t.duration_since(UNIX_EPOCH)
                .map(millis_of)
                .unwrap_or_default(),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + Duration::from_millis(self.0);
        write!(f, "{}", humantime::format_rfc3339_millis(t))
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration the way failure reasons and notices show it (`5m`, `1m 30s`).
pub(super) fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(millis_of(d))).to_string()
}

/// Serde for `Duration` as a number of milliseconds (`"bake_time_ms": 0`).
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes whole milliseconds.
    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::millis_of(*d))
    }

    /// Reads whole milliseconds.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

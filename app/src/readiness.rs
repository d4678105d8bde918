//! Whether the app is booting, ready or broken, as a pure function of the
//! settings, the start time and the current time.
//!
//! Nothing here sleeps or keeps a flag that a task flips: the state is computed
//! from the clock on every request, so it can never lag behind and tests can
//! drive it with `tokio::time::pause()`.

use std::time::Duration;

use tokio::time::Instant;

use crate::Settings;

/// What the app is doing at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Still booting: nothing is served yet (503).
    Booting,
    /// Serving, and health checks pass (200).
    Ready,
    /// Serving, but health checks fail (500): a broken image.
    Unhealthy,
}

/// The schedule of the app's life: when it boots and when, if ever, it breaks.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// When the app started; every deadline counts from here.
    started: Instant,
    /// From [`Settings::boot_delay`]: how long after `started` it is ready.
    boot_delay: Duration,
    /// From [`Settings::fail_health`]: never healthy once booted.
    fail_health: bool,
    /// From [`Settings::fail_after`]: how long after becoming ready it breaks.
    fail_after: Option<Duration>,
}

impl Readiness {
    /// The schedule for an app with `settings` that started at `started`.
    pub fn new(settings: &Settings, started: Instant) -> Self {
        Self {
            started,
            boot_delay: settings.boot_delay,
            fail_health: settings.fail_health,
            fail_after: settings.fail_after,
        }
    }

    /// The state at `now`.
    pub fn at(&self, now: Instant) -> Health {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < self.boot_delay {
            return Health::Booting;
        }
        if self.fail_health {
            return Health::Unhealthy;
        }
        match self.fail_after {
            Some(after) if elapsed >= self.boot_delay.saturating_add(after) => Health::Unhealthy,
            _ => Health::Ready,
        }
    }

    /// The state now.
    pub fn now(&self) -> Health {
        self.at(Instant::now())
    }

    /// When the app stops booting; `None` if that lies beyond what the clock
    /// can represent (it never does).
    pub fn ready_at(&self) -> Option<Instant> {
        self.started.checked_add(self.boot_delay)
    }

    /// When a healthy app turns unhealthy, if it is scheduled to.
    pub fn unhealthy_at(&self) -> Option<Instant> {
        let after = self.fail_after?;
        self.ready_at()?.checked_add(after)
    }

    /// Whether the app was told never to pass a health check.
    pub fn fails_health(&self) -> bool {
        self.fail_health
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(boot: u64, fail_health: bool, fail_after: Option<u64>) -> Settings {
        Settings {
            boot_delay: Duration::from_secs(boot),
            fail_health,
            fail_after: fail_after.map(Duration::from_secs),
            ..Settings::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_app_boots_then_stays_ready() {
        let start = Instant::now();
        let r = Readiness::new(&settings(3, false, None), start);
        assert_eq!(r.at(start), Health::Booting);
        assert_eq!(r.at(start + Duration::from_millis(2999)), Health::Booting);
        assert_eq!(r.at(start + Duration::from_secs(3)), Health::Ready);
        assert_eq!(r.at(start + Duration::from_secs(86_400)), Health::Ready);
        assert_eq!(r.unhealthy_at(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn no_boot_delay_is_ready_at_once() {
        let start = Instant::now();
        let r = Readiness::new(&settings(0, false, None), start);
        assert_eq!(r.at(start), Health::Ready);
    }

    #[tokio::test(start_paused = true)]
    async fn fail_health_is_unhealthy_after_boot_forever() {
        let start = Instant::now();
        let r = Readiness::new(&settings(2, true, None), start);
        assert_eq!(r.at(start), Health::Booting);
        assert_eq!(r.at(start + Duration::from_secs(2)), Health::Unhealthy);
        assert_eq!(r.at(start + Duration::from_secs(1000)), Health::Unhealthy);
    }

    #[tokio::test(start_paused = true)]
    async fn fail_after_counts_from_ready() {
        let start = Instant::now();
        let r = Readiness::new(&settings(2, false, Some(5)), start);
        assert_eq!(r.at(start + Duration::from_secs(2)), Health::Ready);
        assert_eq!(r.at(start + Duration::from_millis(6999)), Health::Ready);
        assert_eq!(r.at(start + Duration::from_secs(7)), Health::Unhealthy);
        assert_eq!(r.unhealthy_at(), Some(start + Duration::from_secs(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn now_follows_the_clock() {
        let r = Readiness::new(&settings(1, false, None), Instant::now());
        assert_eq!(r.now(), Health::Booting);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(r.now(), Health::Ready);
    }

    #[tokio::test(start_paused = true)]
    async fn huge_durations_do_not_overflow() {
        let start = Instant::now();
        let r = Readiness::new(&settings(1, false, Some(u64::MAX)), start);
        assert_eq!(r.at(start + Duration::from_secs(10)), Health::Ready);
        let r = Readiness::new(&settings(u64::MAX, false, None), start);
        assert_eq!(r.at(start + Duration::from_secs(10)), Health::Booting);
    }
}

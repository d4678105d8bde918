//! The demo's recorder: samples the fleet (instances on the old and the new
//! image, instances passing in Consul) in the background, and keeps the
//! rollouts' spans and the moments that matter, for the live view and the
//! timeline chart.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::acl_roles::Secret;
use crate::chart::{FleetPoint, Mark, Span};
use crate::fleet::{FleetHandle, InstanceState, SimInstance};

/// What was recorded.
#[derive(Debug, Default)]
struct Recorded {
    /// The version being rolled out (`None` before the first publish).
    target: Option<String>,
    points: Vec<FleetPoint>,
    spans: Vec<Span>,
    marks: Vec<Mark>,
}

/// A running recorder; [`Recorder::stop`] ends the sampling.
#[derive(Debug)]
pub(super) struct Recorder {
    origin: Instant,
    shared: Arc<Mutex<Recorded>>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<Recorded>) -> MutexGuard<'_, Recorded> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Instances in the group (booting or running, not draining) on an image
/// other than `target`, and on `target`.
pub(super) fn old_new(snapshot: &[SimInstance], target: Option<&str>) -> (usize, usize) {
    let live = snapshot
        .iter()
        .filter(|i| matches!(i.state, InstanceState::Booting | InstanceState::Running));
    let mut old = 0;
    let mut new = 0;
    for instance in live {
        if Some(instance.version.as_str()) == target {
            new += 1;
        } else {
            old += 1;
        }
    }
    (old, new)
}

impl Recorder {
    /// Starts sampling `fleet` and the passing instances of `web` every
    /// `every`, reading Consul with `token` (a read token); times count
    /// from now.
    pub fn start(
        fleet: Arc<FleetHandle>,
        consul: SocketAddr,
        token: Secret,
        every: Duration,
    ) -> Self {
        let origin = Instant::now();
        let shared = Arc::new(Mutex::new(Recorded::default()));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(sample_loop(
            fleet,
            consul,
            token,
            every,
            origin,
            Arc::clone(&shared),
            cancel.clone(),
        ));
        Self {
            origin,
            shared,
            cancel,
            task: Some(task),
        }
    }

    /// Milliseconds since the recorder started.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// From now on, instances on `version` count as new.
    pub fn set_target(&self, version: &str) {
        lock(&self.shared).target = Some(version.to_owned());
    }

    /// The latest sample (all zero before the first).
    pub fn latest(&self) -> FleetPoint {
        lock(&self.shared)
            .points
            .last()
            .copied()
            .unwrap_or(FleetPoint {
                at_ms: 0,
                old: 0,
                new: 0,
                passing: 0,
            })
    }

    /// Records a rollout.
    pub fn span(&self, span: Span) {
        lock(&self.shared).spans.push(span);
    }

    /// Records a moment, now.
    pub fn mark(&self, label: impl Into<String>) {
        let at_ms = self.now_ms();
        lock(&self.shared).marks.push(Mark {
            at_ms,
            label: label.into(),
        });
    }

    /// Stops sampling and answers everything recorded.
    pub async fn stop(mut self) -> (Vec<FleetPoint>, Vec<Span>, Vec<Mark>) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let mut recorded = lock(&self.shared);
        (
            std::mem::take(&mut recorded.points),
            std::mem::take(&mut recorded.spans),
            std::mem::take(&mut recorded.marks),
        )
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn sample_loop(
    fleet: Arc<FleetHandle>,
    consul: SocketAddr,
    token: Secret,
    every: Duration,
    origin: Instant,
    shared: Arc<Mutex<Recorded>>,
    cancel: CancellationToken,
) {
    let http = crate::acl_roles::http_client(&token, Duration::from_secs(2)).unwrap_or_default();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let passing = crate::observe::passing(&http, consul, "web").await.len();
        let snapshot = fleet.snapshot();
        let mut recorded = lock(&shared);
        let (old, new) = old_new(&snapshot, recorded.target.as_deref());
        let at_ms = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        recorded.points.push(FleetPoint {
            at_ms,
            old,
            new,
            passing,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, version: &str, state: InstanceState) -> SimInstance {
        SimInstance {
            instance_id: id.into(),
            image_id: "ami-1".into(),
            version: version.into(),
            reported_version: version.into(),
            availability_zone: "us-east-1a".into(),
            consul_node: format!("node-{id}"),
            state,
            web_addr: None,
            web_pid: None,
            agent_pid: None,
            agent_exit: None,
        }
    }

    #[test]
    fn old_and_new_count_live_instances_by_version() {
        let snapshot = [
            instance("i-1", "1.0.0", InstanceState::Running),
            instance("i-2", "1.0.0", InstanceState::Draining),
            instance("i-3", "1.1.0", InstanceState::Booting),
            instance("i-4", "1.1.0", InstanceState::Running),
            instance("i-5", "1.0.0", InstanceState::Stopped),
        ];
        assert_eq!(old_new(&snapshot, Some("1.1.0")), (1, 2));
        assert_eq!(old_new(&snapshot, None), (3, 0));
    }
}

//! The executor: drives one rollout of `rollout::machine` against the world.
//!
//! Each tick it observes (the group and its instances through the [`Fleet`],
//! the service's health through Consul, pending operator commands from KV),
//! asks the pure machine for the next step, performs the step's actions in
//! order (stopping at the first error: the next tick observes again and the
//! machine asks again, every action being idempotent), then persists the new
//! state with check-and-set, fenced by the leader lock, and consumes the
//! commands the step saw.
//!
//! The AWS part of each observation comes from an [`Informer`] that reads
//! the group in the background every poll interval (EC2 has no change
//! feed): a step woken by Consul acts on the view already held, with its
//! age (`Observation::aws_read_at`), instead of waiting for a describe that
//! under load takes longer than the gate. After its own actions that change
//! AWS, and at the start of a drive, the executor waits for a view read
//! after them, as it always did. The Consul part comes from a [`Follower`]
//! that holds blocking queries on the service's health and commands, dated
//! when each change arrived (`Observation::health_read_at`); and the record
//! is the one this drive last read or wrote (its writes are check-and-set).
//! So a step reads nothing over the network. Before acting, the executor
//! makes sure it still leads and that the health it acts on is Consul's
//! latest; both can be proved a moment ahead (a [`FenceProof`] is good for
//! half the lock-delay, a followed view for
//! [`CONFIRMED_FOR`](super::follower::CONFIRMED_FOR)), so before a deadline
//! it knows of it reads both [`PREPARE_AHEAD`] early, and when the gate's
//! timer fires the reaction is the step and the AWS call.
//!
//! After actions that left the state as it was (the machine waits to see
//! their effect), it observes again at once, a single time. Otherwise,
//! between ticks it waits for whichever comes first: a Consul change (a
//! health change or an operator command, so the gate reacts within
//! milliseconds), the machine's next deadline (`wake_at`), a new AWS view,
//! or the poll interval. A crash at any point is harmless: the next leader
//! reloads the state from KV and observes again.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::follower::Follower;
use super::informer::{Following, Informer};
use super::machine::{self, Action, Change, Observation, Rollout, RolloutEvent, Timestamp};
use super::plan::{Outcome, now_ms};
use super::store::{Store, StoreError};
use crate::aws::{self, Fleet};
use crate::consul;
use crate::consul::lock::FenceProof;
use crate::notify::{Event, Outbox, RolloutNotice, RolloutStage};

/// How long before a deadline the executor proves ahead of time that it
/// leads and that its health view is Consul's latest, so that the step at
/// the deadline acts without a round trip (see the module documentation).
/// A Consul read under load takes tens of milliseconds.
pub const PREPARE_AHEAD: Duration = Duration::from_millis(100);

/// One observation and what the loop needs beside it.
#[derive(Debug)]
struct Observed {
    obs: Observation,
    /// The commands it shows, to consume once the step is persisted.
    keys: Vec<(String, u64)>,
    /// The follower's change count it was built at.
    seen: u64,
    /// The Consul index of its health.
    health_index: u64,
    /// The step's `now`.
    now: Timestamp,
}

/// How often the world is observed when nothing else wakes the executor,
/// and the informer's poll interval.
pub const AWS_POLL: Duration = Duration::from_secs(1);

/// Whether performing `a` may change what AWS answers.
fn changes_aws(a: &Action) -> bool {
    !matches!(
        a,
        Action::Notify(_) | Action::RecordStable { .. } | Action::MarkImageFailed { .. }
    )
}

/// A tick failed; the rollout is retried from KV and a fresh observation.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// AWS failed.
    #[error(transparent)]
    Aws(#[from] aws::Error),
    /// Consul failed.
    #[error(transparent)]
    Consul(#[from] consul::Error),
    /// A KV record problem.
    #[error(transparent)]
    Store(StoreError),
    /// This replica is no longer the leader: stop at once.
    #[error("leadership lost; the rollout continues on the new leader")]
    NotLeader,
    /// Consul filtered the service's health answer: the token cannot read
    /// some of its instances. The rollout waits, acting on nothing, until
    /// it can; deadlines do not run while nobody observes (see
    /// `machine::step` on silences).
    #[error(
        "Consul hides part of service {service}'s health from this token (X-Consul-Results-Filtered-By-ACLs): it lacks service:read on \"{service}\" or node:read on some of its nodes; the rollout waits without acting (config/acl/coordinator.hcl grants both)"
    )]
    HiddenByAcls {
        /// The service.
        service: String,
    },
    /// Asked to record the end of a rollout that is still running (a bug in
    /// the caller: nothing is written).
    #[error("the rollout is still {0}; it has no outcome to record")]
    NotOver(&'static str),
}

impl From<StoreError> for ExecError {
    /// A fenced write refused because the lock moved on is the end of this
    /// replica's leadership, not a KV problem to retry.
    fn from(e: StoreError) -> Self {
        if e.is_fence_lost() {
            ExecError::NotLeader
        } else {
            ExecError::Store(e)
        }
    }
}

/// Drives one service's active rollout.
#[derive(Debug)]
pub struct Executor<'a, F> {
    /// EC2 and Auto Scaling.
    pub fleet: &'a F,
    /// KV records.
    pub store: &'a Store,
    /// Rollout notices.
    pub outbox: &'a Outbox,
    /// The leader's fence, proved before each AWS call (the writes carry
    /// it in their transaction).
    pub leader: &'a FenceProof,
    /// The coordinator's AWS reads, shared by every drive.
    pub informer: &'a Informer<F>,
    /// `wait` of the health blocking query.
    pub wait: Duration,
}

impl<F: Fleet> Executor<'_, F> {
    /// Runs the service's active rollout to its end (answering its outcome),
    /// or until `cancel` fires (answering `None`).
    pub async fn drive(
        &self,
        service: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<Outcome>, ExecError> {
        let Some((rollout, index)) = self.store.rollout(service).await? else {
            return Ok(None);
        };
        if rollout.is_terminal() {
            return self.finish(&rollout, index).await.map(Some);
        }
        // The informer reads this group (with the others) while the drive
        // follows it; the follower reads Consul beside the loop, in this
        // task. Both stop when the drive ends.
        let informer = self.informer.follow(&rollout.spec.group);
        let follower = Follower::new(self.store, service, self.wait);
        tokio::select! {
            () = follower.run() => Ok(None),
            out = self.drive_with(service, cancel, &informer, &follower, (rollout, index)) => out,
        }
    }

    async fn drive_with(
        &self,
        service: &str,
        cancel: &CancellationToken,
        informer: &Following<'_, F>,
        follower: &Follower<'_>,
        loaded: (Rollout, u64),
    ) -> Result<Option<Outcome>, ExecError> {
        let mut created: Option<i64> = None;
        // The AWS view must have been read after this: the drive's start,
        // then the end of the last actions that changed AWS.
        let mut fresh_after = tokio::time::Instant::now();
        let mut acted = false;
        // The record as this drive last read or wrote it. Only the leader
        // writes it, and every write is a check-and-set: a record changed
        // behind this loop's back fails the write, and the loop reads again.
        let mut record = Some(loaded);
        // Commands this drive consumed that the follower may still show.
        let mut consumed: Vec<(String, u64)> = Vec::new();
        loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            let (rollout, index) = match record.take() {
                Some(r) => r,
                None => match self.store.rollout(service).await? {
                    Some(r) => r,
                    None => return Ok(None),
                },
            };
            if rollout.is_terminal() {
                return self.finish(&rollout, index).await.map(Some);
            }
            if rollout.spec.group != informer.group() {
                // Another rollout of another group: drive it afresh.
                return Ok(None);
            }
            let observed = self
                .observe(follower, &mut consumed, created, informer, fresh_after)
                .await?;
            let step = machine::step(&rollout, &observed.obs, observed.now);
            if !step.actions.is_empty()
                && !self
                    .may_act(follower, observed.health_index, tokio::time::Instant::now())
                    .await?
            {
                // Consul moved on since the followed view: step again on
                // what it answers now.
                record = Some((rollout, index));
                continue;
            }
            for (i, action) in step.actions.iter().enumerate() {
                // The first was proved just now; a later one may come after
                // another call's retries (a proof still good answers at once).
                if i > 0 && changes_aws(action) && !self.leader.ensure(self.store.client()).await? {
                    return Err(ExecError::NotLeader);
                }
                if let Some(v) = self.perform(&rollout, action).await? {
                    created = Some(v);
                }
            }
            if step.actions.iter().any(changes_aws) {
                fresh_after = tokio::time::Instant::now();
            }
            if step.next != rollout {
                let Some(written) = self.store.save_rollout(&step.next, index).await? else {
                    tracing::warn!(service, rollout = %rollout.spec.id, "Rollout record changed under us; reloading.");
                    continue;
                };
                if !observed.keys.is_empty() {
                    self.store.consume_commands(&observed.keys).await?;
                    consumed.extend(observed.keys);
                }
                if step.next.spec.target_template_version.is_some() {
                    created = None;
                }
                if step.actions.is_empty() && step.next.state.name() == rollout.state.name() {
                    tracing::debug!(service, rollout = %rollout.spec.id, state = rollout.state.name(),
                        "Rollout record refreshed.");
                } else {
                    tracing::info!(service, rollout = %rollout.spec.id, from = rollout.state.name(),
                        to = step.next.state.name(), "Rollout advanced.");
                }
                record = Some((step.next, written));
                acted = false;
                continue;
            }
            // Actions changed the world but not the state (the machine waits
            // to see their effect): look again at once instead of after the
            // poll interval. Only once in a row: an action the machine keeps
            // asking for while AWS catches up waits like everything else.
            if !acted && step.actions.iter().any(changes_aws) {
                acted = true;
                record = Some((rollout, index));
                continue;
            }
            acted = false;
            self.wait(&rollout, &observed, informer, follower, cancel)
                .await;
            record = Some((rollout, index));
        }
    }

    /// Whether the step that saw health at `health_index` may act `now`: AWS
    /// calls cannot join a Consul transaction, so this proves the lock
    /// just before them (the state write after them is fenced atomically)
    /// and, beside it, that the health acted on is Consul's latest. Either
    /// proof may have been taken a moment earlier (see [`Executor::prepare`]);
    /// otherwise it is read now. `false` when Consul has moved past the
    /// view (a change on its way, or a blocking query stuck on a dead
    /// connection): its answer is now the follower's view.
    async fn may_act(
        &self,
        follower: &Follower<'_>,
        health_index: u64,
        now: tokio::time::Instant,
    ) -> Result<bool, ExecError> {
        let (leader, current) = self.prove(follower, health_index, now).await;
        if !leader? {
            return Err(ExecError::NotLeader);
        }
        let Some(current) = current? else {
            return Ok(true);
        };
        let same = current.index == health_index;
        follower.offer(current);
        Ok(same)
    }

    /// Proves ahead of a deadline `at` that this replica leads and that
    /// the view at `health_index` is Consul's latest, so that the step at
    /// the deadline acts without a round trip. A failure here is left to
    /// the step, which reads again.
    async fn prepare(&self, follower: &Follower<'_>, health_index: u64, at: tokio::time::Instant) {
        let (leader, current) = self.prove(follower, health_index, at + PREPARE_AHEAD).await;
        if let Err(e) = leader {
            tracing::debug!(error = %e, "Cannot check the leader lock ahead of a deadline.");
        }
        match current {
            Ok(Some(view)) => follower.offer(view),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "Cannot read health ahead of a deadline."),
        }
    }

    /// Checks, at once, that this replica leads and that the view at
    /// `health_index` is Consul's latest, each unless a proof held is
    /// still good at `at`: whether it leads, and the health read (`None`
    /// when the view was confirmed recently enough not to read).
    async fn prove(
        &self,
        follower: &Follower<'_>,
        health_index: u64,
        at: tokio::time::Instant,
    ) -> (
        Result<bool, consul::Error>,
        Result<Option<super::follower::HealthView>, ExecError>,
    ) {
        let confirmed = follower
            .confirmed_until(health_index)
            .is_some_and(|until| until > at);
        tokio::join!(self.leader.ensure_at(self.store.client(), at), async {
            match confirmed {
                true => Ok(None),
                false => follower.current().await.map(Some),
            }
        })
    }

    /// Reads the world (see [`Observed`]).
    ///
    /// The AWS part is the informer's latest view, whatever its age (told
    /// to the machine), as long as it was read after `fresh_after`;
    /// otherwise this waits for one that was. The Consul part is the
    /// follower's, read after that wait, with the time its health arrived
    /// (told to the machine too). Commands this drive consumed are left out
    /// until the follower no longer shows them.
    async fn observe(
        &self,
        follower: &Follower<'_>,
        consumed: &mut Vec<(String, u64)>,
        created: Option<i64>,
        informer: &Following<'_, F>,
        fresh_after: tokio::time::Instant,
    ) -> Result<Observed, ExecError> {
        let view = informer.view(fresh_after).await?;
        let seen = follower.changes();
        let (health, commands) = follower.view().await?;
        let now = Timestamp(now_ms());
        let shown =
            |key: &str, index: u64| commands.iter().any(|(k, i, _)| k == key && *i == index);
        consumed.retain(|(k, i)| shown(k, *i));
        let pending: Vec<&(String, u64, machine::OperatorCommand)> = commands
            .iter()
            .filter(|(k, i, _)| !consumed.iter().any(|(ck, ci)| ck == k && ci == i))
            .collect();
        let keys = pending.iter().map(|(k, i, _)| (k.clone(), *i)).collect();
        let obs = Observation {
            group: view.group.clone(),
            instances: view.instances.clone(),
            health: health.by_instance.clone(),
            commands: pending.into_iter().map(|(_, _, c)| c.clone()).collect(),
            created_template_version: created,
            aws_read_at: Some(Timestamp(view.started_ms)),
            health_read_at: Some(health.at),
        };
        Ok(Observed {
            obs,
            keys,
            seen,
            health_index: health.index,
            now,
        })
    }

    /// Waits for a Consul change (health or a command) after the one the
    /// step saw, the next deadline, a new AWS view, or the poll interval.
    /// A deadline the step already saw pass (the machine waits for an AWS
    /// view read after it) is left to the next view. A deadline within the
    /// poll interval is prepared for [`PREPARE_AHEAD`] early
    /// ([`Executor::prepare`]).
    async fn wait(
        &self,
        rollout: &Rollout,
        stepped: &Observed,
        informer: &Following<'_, F>,
        follower: &Follower<'_>,
        cancel: &CancellationToken,
    ) {
        let deadline = rollout
            .wake_at()
            .filter(|t| *t > stepped.now)
            .map(|t| Duration::from_millis(t.0.saturating_sub(now_ms())))
            .filter(|d| *d <= AWS_POLL);
        let start = tokio::time::Instant::now();
        let wake = start + deadline.unwrap_or(AWS_POLL);
        let woken = async {
            tokio::select! {
                _ = cancel.cancelled() => {}
                () = follower.changed_since(stepped.seen) => {}
                () = informer.next_read() => {}
            }
        };
        tokio::pin!(woken);
        if deadline.is_some() {
            let ahead = wake.checked_sub(PREPARE_AHEAD).unwrap_or(start).max(start);
            tokio::select! {
                () = &mut woken => return,
                _ = tokio::time::sleep_until(ahead) => {}
            }
            // Not past the deadline: a Consul slow to answer leaves the
            // proofs to the step.
            tokio::select! {
                () = &mut woken => return,
                () = self.prepare(follower, stepped.health_index, wake) => {}
                _ = tokio::time::sleep_until(wake) => return,
            }
        }
        tokio::select! {
            () = &mut woken => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }

    /// Performs one action; answers a created template version.
    async fn perform(&self, rollout: &Rollout, action: &Action) -> Result<Option<i64>, ExecError> {
        let spec = &rollout.spec;
        let group = spec.group.as_str();
        match action {
            Action::SuspendProcesses(p) => self.fleet.suspend_processes(group, p).await?,
            Action::ResumeProcesses(p) => self.fleet.resume_processes(group, p).await?,
            Action::CreateTemplateVersion {
                template_id,
                base_version,
                image,
                rollout_id,
            } => {
                let base = self
                    .fleet
                    .launch_template_version(template_id, &base_version.to_string())
                    .await?;
                let version = self
                    .fleet
                    .create_launch_template_version(&base, image, rollout_id)
                    .await?;
                tracing::info!(rollout = %spec.id, template = %template_id, version, image = %image,
                    "Launch template version created.");
                return Ok(Some(version));
            }
            Action::SetGroupTemplate {
                template_id,
                version,
            } => {
                self.fleet
                    .set_group_launch_template(group, template_id, *version)
                    .await?;
            }
            Action::SetCapacity { min, max, desired } => {
                let current = self.fleet.describe_group(group).await?;
                let shrinking_max = max.is_some_and(|m| m < current.max_size);
                if shrinking_max {
                    if let Some(d) = desired {
                        self.fleet.set_desired_capacity(group, *d).await?;
                    }
                    self.fleet.set_group_size(group, *min, *max).await?;
                } else {
                    self.fleet.set_group_size(group, *min, *max).await?;
                    if let Some(d) = desired {
                        self.fleet.set_desired_capacity(group, *d).await?;
                    }
                }
            }
            Action::Protect(ids) => self.fleet.set_instance_protection(group, ids, true).await?,
            Action::Unprotect(ids) => {
                self.fleet
                    .set_instance_protection(group, ids, false)
                    .await?
            }
            Action::Terminate { ids, decrement } => {
                for id in ids {
                    self.fleet.terminate_instance(id, *decrement).await?;
                }
            }
            Action::RecordStable {
                template_version,
                image,
                version,
            } => {
                let stable = machine::StableRef {
                    template_version: *template_version,
                    image: image.clone(),
                    version: version.clone(),
                };
                self.store.set_stable(&spec.service, &stable).await?;
            }
            Action::MarkImageFailed { image, reason } => {
                self.store.mark_failed(&spec.service, image, reason).await?;
            }
            Action::Notify(event) => self.notify(rollout, event).await,
        }
        Ok(None)
    }

    /// Enqueues a rollout notice; failures are logged (the outbox is the
    /// durable part, and a lost notice must not stop a rollout).
    async fn notify(&self, rollout: &Rollout, event: &RolloutEvent) {
        let spec = &rollout.spec;
        let Some((stage, reason, batch, ordinal)) = notice_of(rollout, event) else {
            return;
        };
        let (old_version, new_version) = versions(spec);
        let notice = RolloutNotice {
            rollout_id: spec.id.clone(),
            stage: Some(stage),
            service: spec.service.clone(),
            group: spec.group.clone(),
            old_version,
            new_version,
            old_ami: spec.stable.image.clone(),
            new_ami: spec.target_image.clone(),
            plan: spec.id.clone(),
            reason,
            batch: batch.map(|b| b.0),
            batches: batch.map(|b| b.1),
            ordinal,
        };
        if let Err(e) = self
            .outbox
            .enqueue(Event::rollout(notice, vec![], now_ms()))
            .await
        {
            tracing::warn!(rollout = %spec.id, error = %e, "Cannot enqueue a rollout notice.");
        }
    }

    /// Records the outcome on the plan and archives the rollout.
    async fn finish(&self, rollout: &Rollout, index: u64) -> Result<Outcome, ExecError> {
        let Some(outcome) = rollout.outcome(now_ms()) else {
            // The loop only finishes terminal rollouts; a caller that did
            // otherwise is a bug, not a rollout result to record.
            return Err(ExecError::NotOver(rollout.state.name()));
        };
        self.store.set_outcome(&rollout.spec.id, &outcome).await?;
        self.store.archive_rollout(rollout, index).await?;
        tracing::info!(service = %rollout.spec.service, rollout = %rollout.spec.id,
            result = %outcome, reason = %outcome.reason(), "Rollout finished.");
        Ok(outcome)
    }
}

/// The versions a notice names, old and new. A template change keeps the
/// app version, so each side also names its launch template version
/// (`1.4.0 (launch template v4)`): "1.4.0 -> 1.4.0" would say nothing.
fn versions(spec: &machine::RolloutSpec) -> (String, String) {
    match &spec.change {
        Change::Template {
            from_version,
            to_version,
        } => (
            format!("{} (launch template v{from_version})", spec.stable.version),
            format!("{} (launch template v{to_version})", spec.target_version),
        ),
        Change::Image | Change::Rollback { .. } => {
            (spec.stable.version.clone(), spec.target_version.clone())
        }
    }
}

/// What a notice says: its stage, reason, batch (n of m) and ordinal.
type NoticeParts = (RolloutStage, String, Option<(u32, u32)>, Option<u32>);

/// Maps a machine event onto a notice, or logs it when people need not be
/// told (a silence the deadlines were moved for).
fn notice_of(rollout: &Rollout, event: &RolloutEvent) -> Option<NoticeParts> {
    let service = &rollout.spec.service;
    Some(match event {
        RolloutEvent::Started => (RolloutStage::Started, String::new(), None, None),
        RolloutEvent::BatchHealthy { n, of } => (
            RolloutStage::BatchHealthy,
            String::new(),
            Some((*n, *of)),
            None,
        ),
        RolloutEvent::CanaryWaiting { auto_promote_at } => {
            let how = match auto_promote_at {
                Some(t) => {
                    format!("it promotes itself at {t}, or now with `rollgate promote {service}`")
                }
                None => format!(
                    "promote it with `rollgate promote {service}`, or `rollgate abort {service}`"
                ),
            };
            (
                RolloutStage::CanaryWaiting,
                format!("the canary is healthy; {how}"),
                None,
                None,
            )
        }
        RolloutEvent::Promoted => (RolloutStage::Promoted, String::new(), None, None),
        RolloutEvent::Failed { reason } => (RolloutStage::Failed, reason.clone(), None, None),
        RolloutEvent::Reverted { reason } => (RolloutStage::Reverted, reason.clone(), None, None),
        RolloutEvent::Succeeded => (RolloutStage::Succeeded, String::new(), None, None),
        RolloutEvent::Paused { n } => (
            RolloutStage::Paused,
            format!("no action and no deadline until `rollgate resume {service}`"),
            None,
            Some(*n),
        ),
        RolloutEvent::Resumed { n } => (
            RolloutStage::Resumed,
            "deadlines moved later by the time paused; health timers restarted".into(),
            None,
            Some(*n),
        ),
        RolloutEvent::Aborted { by, reason } => (
            RolloutStage::Aborted,
            format!("aborted by {by}: {reason}; reverting to the stable version"),
            None,
            None,
        ),
        RolloutEvent::Unobserved { gap } => {
            tracing::warn!(rollout = %rollout.spec.id, gap = %humantime::format_duration(*gap),
                "Nobody observed this rollout for a while (leader change or outage); its deadlines moved later by that time.");
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use sandbox::consul::{Config as ServerConfig, Fault, Server};
    use tokio::time::Instant;

    use super::*;
    use crate::aws::memory::MemoryFleet;
    use crate::config::ConsulConfig;
    use crate::consul::lock::{LeaderLock, LockConfig};
    use crate::rollout::follower::CONFIRMED_FOR;
    use crate::rollout::machine::{Capacity, Params, RolloutSpec, StableRef};

    /// The registration of instance `id` of `web` with one TTL check in
    /// `status`, as the agent makes it.
    fn web(id: &str, status: &str) -> serde_json::Value {
        serde_json::json!({
            "ID": format!("web-{id}"),
            "Name": "web",
            "Port": 80,
            "Meta": {"instance_id": id, "version": "1.0.0"},
            "Checks": [{"CheckID": format!("web-{id}:agent"), "Name": "agent", "TTL": "10m", "Status": status}],
        })
    }

    /// Every Consul request failing: an answer got with it on was not read.
    fn consul_down() -> Fault {
        Fault {
            path_prefix: "/v1/".into(),
            count: 1000,
            status: 500,
            body: "rpc error: no cluster leader".into(),
            content_type: None,
        }
    }

    /// Before acting, the executor proves it leads and that its health view
    /// is Consul's latest: from proofs still good (no read), by reading
    /// (and stepping again when Consul moved on), or from proofs taken
    /// ahead of a deadline.
    #[tokio::test]
    async fn acting_needs_the_lock_and_the_latest_health_proved_now_or_just_before() {
        // ACLs on, as production runs; the coordinator's role and token.
        let management = sandbox::acl_roles::Secret::new("executor-test-management");
        let consul = Server::start(ServerConfig::with_acls(management.expose()))
            .await
            .unwrap();
        let roles = sandbox::acl_roles::create_workspace_roles(consul.http_addr(), &management)
            .await
            .unwrap();
        let client = crate::consul::Client::new(&ConsulConfig {
            address: format!("http://{}", consul.http_addr()),
            token: Some(crate::config::Secret::new(
                roles.secret("coordinator").unwrap().expose(),
            )),
            ..ConsulConfig::default()
        })
        .unwrap();
        let store = Store::new(client.clone(), "rollgate");
        let lock = LeaderLock::new(
            client.clone(),
            LockConfig {
                lock_delay: Duration::from_secs(2),
                ..LockConfig::new(store.leader_key(), "test")
            },
        );
        let lead = lock
            .acquire(&CancellationToken::new())
            .await
            .unwrap()
            .unwrap();
        let leader = FenceProof::new(
            lead.fence().clone(),
            Duration::from_secs(2),
            CancellationToken::new(),
        );
        let fleet = Arc::new(MemoryFleet::new());
        let informer = Informer::new(fleet.clone(), AWS_POLL);
        let outbox = Outbox::new(client.clone(), "rollgate", &Default::default());
        let executor = Executor {
            fleet: fleet.as_ref(),
            store: &store,
            outbox: &outbox,
            leader: &leader,
            informer: &informer,
            wait: Duration::from_secs(1),
        };
        // The follower is fed by hand (not run): its view moves only when
        // the test or the executor offers one.
        let follower = Follower::new(&store, "web", Duration::from_secs(1));
        consul.add_node("node-1").await.unwrap();
        consul
            .register_services("node-1", &[web("i-1", "passing")])
            .unwrap();
        let first = follower.current().await.unwrap();
        let index = first.index;
        follower.offer(first);
        assert!(leader.verify(&client).await.unwrap());

        // Proofs still good: it acts without reading anything.
        consul.inject_fault(consul_down());
        let good = follower
            .confirmed_until(index)
            .unwrap()
            .min(leader.good_until().unwrap());
        let now = good - Duration::from_millis(1);
        assert!(executor.may_act(&follower, index, now).await.unwrap());
        consul.clear_faults();

        // Consul moved on (an instance came) and the view is no longer
        // confirmed: it reads, says not to act, and the follower holds
        // Consul's answer.
        consul
            .register_services("node-1", &[web("i-2", "critical")])
            .unwrap();
        let late = follower.confirmed_until(index).unwrap() + Duration::from_millis(1);
        assert!(!executor.may_act(&follower, index, late).await.unwrap());
        let moved = follower.current().await.unwrap().index;
        assert!(moved > index);
        assert!(
            follower.confirmed_until(moved).is_some(),
            "the follower holds Consul's answer"
        );

        // Ahead of a deadline: once its proofs have run out, preparing reads
        // them again, and the step at the deadline acts without a read.
        tokio::time::sleep(CONFIRMED_FOR + Duration::from_millis(50)).await;
        let before = follower.confirmed_until(moved).unwrap();
        assert!(before < Instant::now(), "the view's confirmation ran out");
        let deadline = Instant::now() + PREPARE_AHEAD;
        executor.prepare(&follower, moved, deadline).await;
        assert!(
            follower.confirmed_until(moved).unwrap() > deadline,
            "read again"
        );
        consul.inject_fault(consul_down());
        assert!(executor.may_act(&follower, moved, deadline).await.unwrap());
        // Once the confirmation runs out, the step reads (and fails here).
        let ran_out = follower.confirmed_until(moved).unwrap();
        assert!(executor.may_act(&follower, moved, ran_out).await.is_err());
        consul.clear_faults();
        lead.release().await.unwrap();
        consul.shutdown().await;
    }

    fn spec(change: Change) -> RolloutSpec {
        RolloutSpec {
            id: "web-3".into(),
            service: "web".into(),
            change,
            group: "web-asg".into(),
            launch_template_id: "lt-1".into(),
            target_image: "ami-1".into(),
            target_version: "1.4.0".into(),
            target_template_version: None,
            base_template_version: Some(5),
            stable: StableRef {
                template_version: 4,
                image: "ami-1".into(),
                version: "1.4.0".into(),
            },
            params: Params::default(),
            original: Capacity {
                min: 1,
                max: 2,
                desired: 1,
            },
            instances_to_replace: vec![],
        }
    }

    #[test]
    fn a_template_change_names_the_template_versions_not_one_app_version_twice() {
        let s = spec(Change::Template {
            from_version: 4,
            to_version: 5,
        });
        assert_eq!(
            versions(&s),
            (
                "1.4.0 (launch template v4)".to_owned(),
                "1.4.0 (launch template v5)".to_owned()
            )
        );
        let mut s = spec(Change::Image);
        s.target_version = "1.5.0".into();
        assert_eq!(versions(&s), ("1.4.0".to_owned(), "1.5.0".to_owned()));
    }
}

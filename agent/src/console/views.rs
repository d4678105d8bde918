//! What the API answers: views of the stored records shaped for operators
//! (and described in `docs/openapi.yaml`). Pure functions of records and
//! Consul's answers; no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::consul::types::ServiceEntry;
use crate::node::registration::META_INSTANCE_ID;
use crate::notify::outbox::Entry;
use crate::rollout::machine::{Rollout, StableRef, State};
use crate::rollout::plan::{Decision, Millis, Plan};
use crate::rollout::render::{self, Style};

/// A plan as the API shows it: the stored plan, whether it waits for a
/// decision, and its diff exactly as `rollgate plan` prints it.
#[derive(Debug, Serialize)]
pub struct PlanView {
    /// The stored plan (its instances carry their fate: replace or keep).
    #[serde(flatten)]
    pub plan: Plan,
    /// Whether it waits for a decision now (pending and not expired).
    pub awaiting_decision: bool,
    /// `rollgate plan`'s text, without colour.
    pub diff: String,
}

impl PlanView {
    /// The view of `plan` at `now`.
    pub fn new(plan: Plan, now: Millis) -> Self {
        let diff = render::plan(&plan, Style { color: false });
        Self {
            awaiting_decision: plan.is_pending(now),
            diff,
            plan,
        }
    }
}

/// The stable release.
#[derive(Debug, Serialize)]
pub struct StableView {
    /// The image.
    pub image: String,
    /// Its version.
    pub version: String,
    /// The launch template version.
    pub template_version: i64,
}

/// The active rollout in one line.
#[derive(Debug, Serialize)]
pub struct RolloutSummary {
    /// Its plan.
    pub plan: String,
    /// Its phase (`launching`, `paused`, ...).
    pub phase: &'static str,
    /// Batches proven so far.
    pub batch: u32,
    /// Batches in all (from the plan; 0 when unknown).
    pub batches: u32,
    /// Target version.
    pub target_version: String,
}

/// How a plan's rollout ended.
#[derive(Debug, Serialize)]
pub struct OutcomeView {
    /// The plan.
    pub plan: String,
    /// `succeeded`, `reverted`, `failed`, `aborted`.
    pub outcome: &'static str,
    /// When, in milliseconds since the epoch.
    pub at: Millis,
    /// Why, as the alert gives it (empty for a success).
    pub reason: String,
}

/// A service at a glance.
#[derive(Debug, Serialize)]
pub struct ServiceView {
    /// The service.
    pub name: String,
    /// The stable release, when recorded and readable.
    pub stable: Option<StableView>,
    /// Why `stable` is missing although it may exist: Consul refused the
    /// read (the operator policy does not grant it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_refused: Option<String>,
    /// The active rollout, if any.
    pub active_rollout: Option<RolloutSummary>,
    /// The last plan with an outcome, if any.
    pub last_outcome: Option<OutcomeView>,
    /// Plans waiting for a decision, oldest first.
    pub pending_plans: Vec<String>,
}

/// The view of one service.
pub fn service(
    name: &str,
    plans: &[Plan],
    rollout: Option<&Rollout>,
    stable: Result<Option<StableRef>, String>,
    now: Millis,
) -> ServiceView {
    let (stable, stable_refused) = match stable {
        Ok(s) => (
            s.map(|s| StableView {
                image: s.image,
                version: s.version,
                template_version: s.template_version,
            }),
            None,
        ),
        Err(why) => (None, Some(why)),
    };
    ServiceView {
        name: name.to_string(),
        stable,
        stable_refused,
        active_rollout: rollout.map(|r| RolloutSummary {
            plan: r.spec.id.clone(),
            phase: r.state.name(),
            batch: r.progress.batches_done,
            batches: plans
                .iter()
                .find(|p| p.id == r.spec.id)
                .map_or(0, |p| p.batches),
            target_version: r.spec.target_version.clone(),
        }),
        last_outcome: plans
            .iter()
            .rev()
            .find_map(|p| p.outcome.as_ref().map(|o| (p, o)))
            .map(|(p, o)| OutcomeView {
                plan: p.id.clone(),
                outcome: o.word(),
                at: o.at(),
                reason: o.reason().to_string(),
            }),
        pending_plans: plans
            .iter()
            .filter(|p| p.is_pending(now))
            .map(|p| p.id.clone())
            .collect(),
    }
}

/// One plan's decision.
#[derive(Debug, Serialize)]
pub struct DecisionView {
    /// The plan.
    pub plan: String,
    /// The decision as stored (`state`, `by`, `at`, `reason`, ...).
    pub decision: Decision,
    /// In words, as the CLI says it.
    pub text: String,
}

impl DecisionView {
    /// The decision of `p`.
    pub fn of(p: &Plan) -> Self {
        Self {
            plan: p.id.clone(),
            decision: p.decision.clone(),
            text: render::decision(&p.decision),
        }
    }
}

/// One line of history.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    /// The plan.
    pub plan: String,
    /// When it was made.
    pub created_at: Millis,
    /// From version.
    pub from_version: String,
    /// To version.
    pub to_version: String,
    /// `pending`, `approved`, `rejected`, `expired`, `superseded`.
    pub decision: &'static str,
    /// The decision in words.
    pub decision_text: String,
    /// How its rollout ended, if it did.
    pub outcome: Option<&'static str>,
    /// When it ended.
    pub ended_at: Option<Millis>,
    /// Why it failed (empty for a success).
    pub reason: String,
}

impl HistoryEntry {
    /// The history line of `p`.
    pub fn of(p: &Plan) -> Self {
        Self {
            plan: p.id.clone(),
            created_at: p.created_at,
            from_version: p.current.version.clone(),
            to_version: p.target.version.clone(),
            decision: p.decision.word(),
            decision_text: render::decision(&p.decision),
            outcome: p.outcome.as_ref().map(|o| o.word()),
            ended_at: p.outcome.as_ref().map(|o| o.at()),
            reason: p
                .outcome
                .as_ref()
                .map(|o| o.reason().to_string())
                .unwrap_or_default(),
        }
    }
}

/// The history of `plans` (oldest first): newest first.
pub fn history(plans: &[Plan]) -> Vec<HistoryEntry> {
    plans.iter().rev().map(HistoryEntry::of).collect()
}

/// One Consul check of an instance.
#[derive(Debug, Serialize)]
pub struct CheckView {
    /// Consul's check ID.
    pub check_id: String,
    /// Its name.
    pub name: String,
    /// `passing`, `warning`, `critical`.
    pub status: &'static str,
    /// Its last output.
    pub output: String,
}

/// How far a new instance is in proving itself healthy.
#[derive(Debug, Serialize)]
pub struct HealthTimer {
    /// Passing without interruption since then (ms), if passing.
    pub passing_since: Option<Millis>,
    /// Counted healthy at (ms), once proven.
    pub healthy_at: Option<Millis>,
    /// Unhealthy (the rollout fails) if not proven by then (ms).
    pub healthy_deadline_at: Millis,
    /// Milliseconds left until it counts healthy (0 once proven; `null`
    /// while not passing).
    pub proven_in_ms: Option<u64>,
}

/// One instance of the service during a rollout.
#[derive(Debug, Serialize)]
pub struct InstanceView {
    /// The EC2 instance (service Meta `instance_id`).
    pub instance_id: String,
    /// The Consul node.
    pub node: String,
    /// Its image (Meta `ami_id`).
    pub image: String,
    /// Its version (Meta `version`).
    pub version: String,
    /// Its availability zone (Meta `az`).
    pub zone: String,
    /// `new` (the rollout's target or launched by it) or `old`.
    pub generation: &'static str,
    /// Every check of the instance passing.
    pub passing: bool,
    /// Its checks.
    pub checks: Vec<CheckView>,
    /// Its health timer, for the new instances of the current batch.
    pub health_timer: Option<HealthTimer>,
}

/// The active rollout in full.
#[derive(Debug, Serialize)]
pub struct RolloutView {
    /// Its plan.
    pub plan: String,
    /// The service.
    pub service: String,
    /// Its phase.
    pub phase: &'static str,
    /// Batches proven so far.
    pub batch: u32,
    /// Batches in all (0 when the plan is unreadable).
    pub batches: u32,
    /// Target image and version.
    pub target_image: String,
    /// The target version.
    pub target_version: String,
    /// What a revert returns to.
    pub stable_image: String,
    /// The stable version.
    pub stable_version: String,
    /// The next deadline (ms), if one runs.
    pub next_deadline_at: Option<Millis>,
    /// Old instances still to retire.
    pub old_remaining: usize,
    /// New instances proven healthy.
    pub new_healthy: usize,
    /// The instances Consul knows for the service.
    pub instances: Vec<InstanceView>,
    /// Consul removed instances or checks the caller's token may not read:
    /// the list is not the whole truth.
    pub filtered_by_acls: bool,
    /// The stored state (`state` names the phase; its fields the deadlines).
    pub state: State,
}

impl RolloutView {
    /// The view of `r`, its plan and Consul's health answer at `now`.
    pub fn new(
        r: &Rollout,
        plan: Option<&Plan>,
        health: &[ServiceEntry],
        filtered: bool,
        now: Millis,
    ) -> Self {
        let mut new_ids: BTreeSet<&str> = r.progress.accepted.iter().map(String::as_str).collect();
        let active = match &r.state {
            State::Paused { prior, .. } => prior.as_ref(),
            s => s,
        };
        let mut timers = BTreeMap::new();
        match active {
            State::Launching(b) => {
                for n in &b.new {
                    new_ids.insert(&n.id);
                    let min = u64::try_from(r.spec.params.min_healthy_time.as_millis())
                        .unwrap_or(u64::MAX);
                    timers.insert(
                        n.id.clone(),
                        HealthTimer {
                            passing_since: n.passing_since.map(|t| t.0),
                            healthy_at: n.healthy_at.map(|t| t.0),
                            healthy_deadline_at: n.healthy_deadline_at.0,
                            proven_in_ms: match (n.healthy_at, n.passing_since) {
                                (Some(_), _) => Some(0),
                                (None, Some(since)) => {
                                    Some(since.0.saturating_add(min).saturating_sub(now))
                                }
                                (None, None) => None,
                            },
                        },
                    );
                }
            }
            State::Retiring(x) => new_ids.extend(x.new.iter().map(String::as_str)),
            State::CanaryPaused(c) => new_ids.extend(c.new.iter().map(String::as_str)),
            State::Baking { watch, .. } => new_ids.extend(watch.iter().map(String::as_str)),
            _ => {}
        }
        let target = r.spec.target_image.as_str();
        let instances = instances(
            health,
            |id, image| new_ids.contains(id) || (!image.is_empty() && image == target),
            timers,
        );
        let p = &r.progress;
        Self {
            plan: r.spec.id.clone(),
            service: r.spec.service.clone(),
            phase: r.state.name(),
            batch: p.batches_done,
            batches: plan.map_or(0, |p| p.batches),
            target_image: r.spec.target_image.clone(),
            target_version: r.spec.target_version.clone(),
            stable_image: r.spec.stable.image.clone(),
            stable_version: r.spec.stable.version.clone(),
            next_deadline_at: r.wake_at().map(|t| t.0),
            old_remaining: p.to_replace.len().saturating_sub(p.retired.len()),
            new_healthy: p.accepted.len(),
            instances,
            filtered_by_acls: filtered,
            state: r.state.clone(),
        }
    }
}

/// The instances of Consul's health answer, `new` when `is_new(instance
/// ID, image)`, each with its checks and (from `timers`) its health timer;
/// old ones first, then by instance ID.
pub fn instances(
    health: &[ServiceEntry],
    is_new: impl Fn(&str, &str) -> bool,
    mut timers: BTreeMap<String, HealthTimer>,
) -> Vec<InstanceView> {
    let mut instances: Vec<InstanceView> = health
        .iter()
        .map(|e| {
            let meta = e.service.meta.clone().unwrap_or_default();
            let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
            let id = get(META_INSTANCE_ID);
            let image = get("ami_id");
            let new = is_new(&id, &image);
            let checks: Vec<CheckView> = e
                .checks
                .iter()
                .map(|c| CheckView {
                    check_id: c.check_id.clone(),
                    name: c.name.clone(),
                    status: c.status.map_or("unknown", |s| s.as_str()),
                    output: c.output.clone(),
                })
                .collect();
            InstanceView {
                passing: !checks.is_empty() && checks.iter().all(|c| c.status == "passing"),
                health_timer: timers.remove(&id),
                instance_id: id,
                node: e.node.node.clone(),
                version: get("version"),
                zone: get("az"),
                generation: if new { "new" } else { "old" },
                image,
                checks,
            }
        })
        .collect();
    instances.sort_by(|a, b| (a.generation, &a.instance_id).cmp(&(b.generation, &b.instance_id)));
    instances
}

/// A receiver's copies by state.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct ReceiverCounts {
    /// Not delivered yet, last attempt (if any) did not fail.
    pub pending: u64,
    /// Delivered.
    pub delivered: u64,
    /// Not delivered, the last attempt failed.
    pub failing: u64,
}

impl ReceiverCounts {
    /// Counts one copy in `state`.
    pub fn count(&mut self, state: &str) {
        match state {
            "delivered" => self.delivered += 1,
            "failing" => self.failing += 1,
            _ => self.pending += 1,
        }
    }

    /// `[pending, delivered, failing]`.
    pub fn as_array(self) -> [i64; 3] {
        let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        [i(self.pending), i(self.delivered), i(self.failing)]
    }
}

/// One receiver's copy of an outbox entry.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    /// `pending`, `delivered` or `failing`.
    pub state: &'static str,
    /// Attempts made.
    pub attempts: u32,
    /// When it was delivered (ms).
    pub delivered_at: Option<Millis>,
    /// The next attempt (ms), while not delivered.
    pub next_attempt_at: Option<Millis>,
    /// The last failure.
    pub last_error: String,
    /// The receiver this copy stands in for, when it is a fallback.
    pub fallback_for: Option<String>,
}

/// One outbox entry.
#[derive(Debug, Serialize)]
pub struct OutboxEntry {
    /// Its KV key.
    pub key: String,
    /// `health`, `rollout`, `meta`.
    pub kind: &'static str,
    /// The service concerned (empty for node-level alerts).
    pub service: String,
    /// When it was enqueued (ms).
    pub enqueued_at: Millis,
    /// Delivered to every receiver at (ms).
    pub done_at: Option<Millis>,
    /// Per receiver.
    pub deliveries: BTreeMap<String, DeliveryView>,
}

impl OutboxEntry {
    /// The view of the entry under `key`.
    pub fn of(key: &str, e: &Entry) -> Self {
        Self {
            key: key.to_string(),
            kind: e.event.body.kind(),
            service: e.event.service.clone(),
            enqueued_at: e.enqueued_ms,
            done_at: e.done_ms,
            deliveries: e
                .deliveries
                .iter()
                .map(|(r, d)| {
                    let state = delivery_state(d);
                    (
                        r.clone(),
                        DeliveryView {
                            state,
                            attempts: d.attempts,
                            delivered_at: d.delivered_ms,
                            next_attempt_at: d.delivered_ms.is_none().then_some(d.next_attempt_ms),
                            last_error: d.last_error.clone(),
                            fallback_for: d.fallback_for.clone(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// `delivered`, `failing` (its last attempt failed) or `pending`.
pub fn delivery_state(d: &crate::notify::outbox::Delivery) -> &'static str {
    if d.delivered_ms.is_some() {
        "delivered"
    } else if !d.last_error.is_empty() {
        "failing"
    } else {
        "pending"
    }
}

//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format
//! (`prometheus-client`).
//!
//! Three kinds of figures:
//!
//! - **calls**, counted where they happen: every Consul HTTP call (one hook
//!   in `consul::Client`) and every AWS attempt (one hook in
//!   `aws::retry::Retrying`), by operation and result, with latency. The
//!   hooks do nothing until [`install`] ran: only the coordinator's console
//!   and `rollgate watch` with `watch.metrics_listen` install the registry,
//!   so `rollgate agent` never allocates it.
//! - **state**, read from Consul KV, where every replica finds the same
//!   truth ([`Metrics::observe`]): rollouts by outcome, the active rollout's
//!   phase and batch, instances old/new/passing, how long a plan has waited
//!   for approval, the outbox. Histograms of rollout duration, gate
//!   reaction and approval wait are observed once per rollout, batch or
//!   plan the first time this process sees it finished.
//! - **events**, counted where they happen in the health watcher and the
//!   outbox sender ([`watch_transition`], [`delivery`]): check status
//!   transitions, delivery attempts by receiver and result, and alert
//!   latency. `rollgate watch` installs the registry and serves it on its
//!   own listener ([`serve`], `watch.metrics_listen`) only when configured.
//!
//! Labels are bounded: service names and receivers come from the
//! configuration, operations from fixed vocabularies, outcomes, phases and
//! check statuses from enums. No instance ID, plan ID, check ID, key or
//! token ever becomes a label.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::consul::types::CheckStatus;
use crate::rollout::machine::{Rollout, State};
use crate::rollout::plan::{Decision, Millis, Plan};

/// The process's metrics, once [`install`]ed.
static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Installs the registry (idempotent) and answers it. Called by the
/// console at start-up; before that, the call hooks are no-ops.
pub fn install() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// The installed registry, if any.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Labels of a Consul call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsulCall {
    /// `kv`, `txn`, `health/service`, `agent/check/update`, ...
    operation: String,
    /// `GET`, `PUT`, `DELETE`.
    method: String,
    /// `ok`, `not_found`, `denied`, `error`, `unreachable`.
    result: &'static str,
}

/// Labels of a Consul latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsulOp {
    operation: String,
    method: String,
}

/// Labels of an AWS call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsCall {
    /// The API action (`DescribeAutoScalingGroups`).
    operation: &'static str,
    /// `ok`, `retryable_error`, `error`.
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsOp {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceOutcome {
    service: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServicePhase {
    service: String,
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceGeneration {
    service: String,
    /// `old` (the stable image) or `new` (the rollout's target).
    generation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverState {
    receiver: String,
    /// `pending`, `delivered`, `failing`.
    state: &'static str,
}

/// Labels of a check status change seen by the health watcher.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckTransition {
    /// `untracked` (first seen, or passing and so not tracked), else the
    /// status word (`passing`, `warning`, `critical`, `unknown`).
    from: &'static str,
    /// The status word, or `gone` (deregistered, or its node left).
    to: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabel {
    /// A receiver of `[notify]`, or `unconfigured`.
    receiver: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverResult {
    /// A receiver of `[notify]`, or `unconfigured`.
    receiver: String,
    /// `delivered`, `retryable_error`, `error`.
    result: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn long() -> Histogram {
    // 1 s .. ~9 h.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

fn alert() -> Histogram {
    // 10 ms .. ~1.5 h: retries and fallbacks can take a while.
    Histogram::new(exponential_buckets(0.01, 2.0, 20))
}

fn reaction() -> Histogram {
    // 1 ms .. ~65 s: the gate should act within milliseconds of proof.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Registers the families every process with metrics has: Consul calls,
/// check transitions, deliveries and alert latency.
fn register_shared(r: &mut Registry, m: &Metrics) {
    r.register(
        "consul_requests",
        "Consul HTTP calls by operation, method and result",
        m.consul_calls.clone(),
    );
    r.register(
        "consul_request_duration_seconds",
        "Latency of Consul HTTP calls that do not block (blocking queries are counted, not timed)",
        m.consul_seconds.clone(),
    );
    r.register(
        "watch_check_transitions",
        "Check status changes the health watcher acted on, by status before (untracked: first seen, or passing) and after (gone: deregistered or its node left)",
        m.transitions.clone(),
    );
    r.register(
        "outbox_delivery_attempts",
        "Attempts to deliver an outbox entry to a receiver, by receiver and result (delivered, retryable_error, error)",
        m.delivery_attempts.clone(),
    );
    r.register(
        "alert_latency_seconds",
        "From an event being raised (a health notice, a rollout stage) to its delivery to a receiver, retries and fallbacks included",
        m.alert_seconds.clone(),
    );
}

/// Every phase a rollout can be in, so each has a series (0 or 1).
const PHASES: [&str; 11] = [
    "pending",
    "preparing",
    "launching",
    "retiring",
    "canary_paused",
    "baking",
    "paused",
    "reverting",
    "succeeded",
    "reverted",
    "failed",
];

/// Every outcome word of a plan.
const OUTCOMES: [&str; 4] = ["succeeded", "reverted", "failed", "aborted"];

/// The registry and its families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The same call and event families, without the coordinator's state
    /// figures: what `rollgate watch`'s listener ([`serve`]) answers.
    watch_registry: Registry,
    consul_calls: Family<ConsulCall, Counter>,
    consul_seconds: Histograms<ConsulOp>,
    aws_calls: Family<AwsCall, Counter>,
    aws_seconds: Histograms<AwsOp>,
    leader: Gauge,
    rollouts: Family<ServiceOutcome, Counter>,
    rollout_seconds: Histograms<ServiceOutcome>,
    phase: Family<ServicePhase, Gauge>,
    batch: Family<ServiceLabel, Gauge>,
    batches: Family<ServiceLabel, Gauge>,
    instances: Family<ServiceGeneration, Gauge>,
    passing: Family<ServiceGeneration, Gauge>,
    gate_seconds: Histograms<ServiceLabel>,
    pending_plans: Family<ServiceLabel, Gauge>,
    pending_seconds: Family<ServiceLabel, Gauge<f64, AtomicU64>>,
    approval_seconds: Histograms<ServiceLabel>,
    outbox_depth: Gauge,
    deliveries: Family<ReceiverState, Gauge>,
    transitions: Family<CheckTransition, Counter>,
    delivery_attempts: Family<ReceiverResult, Counter>,
    alert_seconds: Histograms<ReceiverLabel>,
    /// What was already observed into the histograms and counters: plan
    /// IDs with an outcome or a decision, the batch being proven. Grows
    /// with the history kept in KV, not with time.
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    outcomes: BTreeSet<String>,
    decisions: BTreeSet<String>,
    /// Per service, the batch last seen launching: (rollout, batch number,
    /// when it was proven healthy: its last instance passing for
    /// `min_healthy_time`, once every instance passes).
    proving: BTreeMap<String, (String, u32, Option<u64>)>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("rollgate");
        let m = Metrics {
            consul_calls: Family::default(),
            consul_seconds: Family::new_with_constructor(latency),
            aws_calls: Family::default(),
            aws_seconds: Family::new_with_constructor(latency),
            leader: Gauge::default(),
            rollouts: Family::default(),
            rollout_seconds: Family::new_with_constructor(long),
            phase: Family::default(),
            batch: Family::default(),
            batches: Family::default(),
            instances: Family::default(),
            passing: Family::default(),
            gate_seconds: Family::new_with_constructor(reaction),
            pending_plans: Family::default(),
            pending_seconds: Family::default(),
            approval_seconds: Family::new_with_constructor(long),
            outbox_depth: Gauge::default(),
            deliveries: Family::default(),
            transitions: Family::default(),
            delivery_attempts: Family::default(),
            alert_seconds: Family::new_with_constructor(alert),
            seen: Mutex::default(),
            registry: Registry::default(),
            watch_registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "aws_requests",
            "AWS API attempts by operation and result",
            m.aws_calls.clone(),
        );
        r.register(
            "aws_request_duration_seconds",
            "Latency of AWS API attempts",
            m.aws_seconds.clone(),
        );
        r.register(
            "leader",
            "1 when this coordinator replica holds the leader lock, else 0",
            m.leader.clone(),
        );
        r.register(
            "rollouts",
            "Rollouts that ended, by service and outcome (from the plans kept in Consul KV)",
            m.rollouts.clone(),
        );
        r.register(
            "rollout_duration_seconds",
            "From approval to the end of a rollout, by service and outcome",
            m.rollout_seconds.clone(),
        );
        r.register(
            "rollout_phase",
            "1 for the phase the service's active rollout is in, 0 for the others",
            m.phase.clone(),
        );
        r.register(
            "rollout_batch",
            "Batches of the active rollout proven healthy so far",
            m.batch.clone(),
        );
        r.register(
            "rollout_batches",
            "Batches the active rollout has in total",
            m.batches.clone(),
        );
        r.register(
            "instances",
            "Instances registered in Consul by generation: old (not the rollout's target) or new",
            m.instances.clone(),
        );
        r.register(
            "instances_passing",
            "Instances whose every Consul check passes, by generation",
            m.passing.clone(),
        );
        r.register(
            "gate_reaction_seconds",
            "From a batch proven healthy (its last new instance passing for min_healthy_time) to the rollout acting on it, from the rollout record",
            m.gate_seconds.clone(),
        );
        r.register(
            "plans_pending_approval",
            "Plans waiting for an operator's decision",
            m.pending_plans.clone(),
        );
        r.register(
            "plan_pending_approval_seconds",
            "How long the oldest plan waiting for a decision has waited (0 when none waits)",
            m.pending_seconds.clone(),
        );
        r.register(
            "plan_approval_wait_seconds",
            "From a plan's creation to its decision (approved or rejected)",
            m.approval_seconds.clone(),
        );
        r.register(
            "outbox_depth",
            "Alert outbox entries not yet delivered to every receiver",
            m.outbox_depth.clone(),
        );
        r.register(
            "outbox_deliveries",
            "Alert outbox copies per receiver: pending, delivered, failing (last attempt failed)",
            m.deliveries.clone(),
        );
        register_shared(r, &m);
        // `rollgate watch` serves only what it has: its calls and events,
        // not the coordinator's state figures it never reads.
        let mut watch = Registry::with_prefix("rollgate");
        register_shared(&mut watch, &m);
        Metrics {
            registry,
            watch_registry: watch,
            ..m
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The OpenMetrics text of the call and event metrics only (what
    /// `rollgate watch` has).
    pub fn encode_watch(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.watch_registry);
        out
    }

    /// Sets whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Updates the state figures of `service` from what KV and Consul's
    /// health hold now.
    pub fn observe(&self, service: &str, view: &ServiceState<'_>) {
        let svc = || service.to_string();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending = 0i64;
        let mut oldest: Option<Millis> = None;
        for outcome in OUTCOMES {
            // Every outcome has a series, so a rate is 0, not absent.
            let _ = self.rollouts.get_or_create(&ServiceOutcome {
                service: svc(),
                outcome,
            });
        }
        for plan in view.plans {
            if let Decision::Pending { .. } = plan.decision {
                if plan.is_pending(view.now) {
                    pending += 1;
                    oldest = Some(oldest.map_or(plan.created_at, |o| o.min(plan.created_at)));
                }
            }
            let decided_at = match &plan.decision {
                Decision::Approved { at, by } if !by.starts_with("policy:") => Some(*at),
                Decision::Rejected { at, .. } => Some(*at),
                _ => None,
            };
            if let Some(at) = decided_at {
                if seen.decisions.insert(plan.id.clone()) {
                    self.approval_seconds
                        .get_or_create(&ServiceLabel { service: svc() })
                        .observe(seconds(at.saturating_sub(plan.created_at)));
                }
            }
            if let Some(outcome) = &plan.outcome {
                if seen.outcomes.insert(plan.id.clone()) {
                    let labels = ServiceOutcome {
                        service: svc(),
                        outcome: outcome.word(),
                    };
                    self.rollouts.get_or_create(&labels).inc();
                    if let Decision::Approved { at, .. } = plan.decision {
                        self.rollout_seconds
                            .get_or_create(&labels)
                            .observe(seconds(outcome.at().saturating_sub(at)));
                    }
                }
            }
        }
        let label = ServiceLabel { service: svc() };
        self.pending_plans.get_or_create(&label).set(pending);
        self.pending_seconds
            .get_or_create(&label)
            .set(oldest.map_or(0.0, |o| seconds(view.now.saturating_sub(o))));

        let current = view.rollout.map(|r| r.state.name());
        for phase in PHASES {
            self.phase
                .get_or_create(&ServicePhase {
                    service: svc(),
                    phase,
                })
                .set(i64::from(current == Some(phase)));
        }
        let (done, total) = match view.rollout {
            Some(r) => (
                i64::from(r.progress.batches_done),
                view.plans
                    .iter()
                    .find(|p| p.id == r.spec.id)
                    .map_or(0, |p| i64::from(p.batches)),
            ),
            None => (0, 0),
        };
        self.batch.get_or_create(&label).set(done);
        self.batches.get_or_create(&label).set(total);
        match view.rollout {
            Some(r) => self.gate_reaction(&mut seen, service, r),
            None => {
                seen.proving.remove(service);
            }
        }
        for (generation, count) in [("old", view.old), ("new", view.new)] {
            let l = ServiceGeneration {
                service: svc(),
                generation,
            };
            self.instances.get_or_create(&l).set(count.0);
            self.passing.get_or_create(&l).set(count.1);
        }
    }

    /// The gate's reaction, from the rollout's own record: a batch seen
    /// launching with every instance passing is proven at the last one's
    /// `passing_since + min_healthy_time`; the first record that moved on
    /// (retiring or canary-paused, same batch) carries the step's time in
    /// `observed_at`. The difference is how long the gate took to act.
    fn gate_reaction(&self, seen: &mut Seen, service: &str, r: &Rollout) {
        let min = u64::try_from(r.spec.params.min_healthy_time.as_millis()).unwrap_or(u64::MAX);
        let active = match &r.state {
            State::Paused { prior, .. } => prior.as_ref(),
            s => s,
        };
        let moved_on = match active {
            State::Launching(b) => {
                let proven = b
                    .new
                    .iter()
                    .map(|n| n.passing_since.map(|t| t.0.saturating_add(min)))
                    .collect::<Option<Vec<u64>>>()
                    .and_then(|v| v.into_iter().max())
                    .filter(|_| b.new.len() >= b.size as usize);
                seen.proving
                    .insert(service.to_string(), (r.spec.id.clone(), b.number, proven));
                return;
            }
            State::Retiring(x) => Some(x.batch),
            State::CanaryPaused(_) | State::Baking { .. } => None,
            _ => return,
        };
        let Some((rollout, number, proven)) = seen.proving.get(service).cloned() else {
            return;
        };
        if rollout != r.spec.id || moved_on.is_some_and(|n| n != number) {
            return;
        }
        seen.proving.remove(service);
        if let (Some(proven), Some(at)) = (proven, r.progress.observed_at) {
            self.gate_seconds
                .get_or_create(&ServiceLabel {
                    service: service.to_string(),
                })
                .observe(seconds(at.0.saturating_sub(proven)));
        }
    }

    /// Updates the outbox figures: entries not done, and per receiver its
    /// copies by state.
    pub fn observe_outbox(&self, depth: i64, per_receiver: &BTreeMap<String, [i64; 3]>) {
        self.outbox_depth.set(depth);
        for (receiver, counts) in per_receiver {
            for (state, n) in ["pending", "delivered", "failing"].iter().zip(counts) {
                self.deliveries
                    .get_or_create(&ReceiverState {
                        receiver: receiver.clone(),
                        state,
                    })
                    .set(*n);
            }
        }
    }
}

/// What [`Metrics::observe`] reads for one service.
#[derive(Debug)]
pub struct ServiceState<'a> {
    /// Every plan of the service.
    pub plans: &'a [Plan],
    /// The active rollout, if any.
    pub rollout: Option<&'a Rollout>,
    /// Old instances: (registered, passing).
    pub old: (i64, i64),
    /// New instances: (registered, passing).
    pub new: (i64, i64),
    /// Now, in milliseconds since the epoch.
    pub now: Millis,
}

fn seconds(ms: u64) -> f64 {
    Duration::from_millis(ms).as_secs_f64()
}

/// Consul API words that name an operation (never a key, service, node or
/// ID): a path keeps its leading words while they are in this list.
const CONSUL_WORDS: &[&str] = &[
    "acl",
    "agent",
    "catalog",
    "check",
    "checks",
    "connect",
    "deregister",
    "fail",
    "health",
    "kv",
    "leader",
    "maintenance",
    "node",
    "nodes",
    "pass",
    "register",
    "renew",
    "self",
    "service",
    "services",
    "session",
    "state",
    "status",
    "create",
    "destroy",
    "info",
    "list",
    "token",
    "txn",
    "update",
    "warn",
];

/// The operation of a Consul path: `/v1/kv/rollgate/x` is `kv`,
/// `/v1/health/service/web` is `health/service`.
pub fn consul_operation(path: &str) -> String {
    let rest = path.strip_prefix("/v1/").unwrap_or(path);
    let words: Vec<&str> = rest
        .split('/')
        .take_while(|w| CONSUL_WORDS.contains(w))
        .take(if rest.starts_with("kv/") { 1 } else { 3 })
        .collect();
    if words.is_empty() {
        "other".into()
    } else {
        words.join("/")
    }
}

/// Hook of `consul::Client`: one call ended after `elapsed` with HTTP
/// `status` (`None`: no answer).
pub fn consul_call(
    method: &str,
    path: &str,
    blocking: bool,
    status: Option<u16>,
    elapsed: Duration,
) {
    let Some(m) = get() else {
        return;
    };
    let operation = consul_operation(path);
    let result = match status {
        None => "unreachable",
        Some(200..=299) => "ok",
        Some(403) => "denied",
        Some(404) => "not_found",
        Some(_) => "error",
    };
    m.consul_calls
        .get_or_create(&ConsulCall {
            operation: operation.clone(),
            method: method.to_string(),
            result,
        })
        .inc();
    if !blocking {
        m.consul_seconds
            .get_or_create(&ConsulOp {
                operation,
                method: method.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// Hook of the health watcher: it acted on a check's change of status
/// (`None`: untracked before, gone after).
pub fn watch_transition(from: Option<CheckStatus>, to: Option<CheckStatus>) {
    let Some(m) = get() else {
        return;
    };
    m.transitions
        .get_or_create(&CheckTransition {
            from: from.map_or("untracked", CheckStatus::as_str),
            to: to.map_or("gone", CheckStatus::as_str),
        })
        .inc();
}

/// Hook of the outbox sender: one attempt to deliver an event raised at
/// `raised_ms` to `receiver` ended (`Err(retryable)` when it failed).
/// `configured`: the receiver is in `[notify]` (else it is counted as
/// `unconfigured`, so a stray name in KV never becomes a label).
pub fn delivery(receiver: &str, configured: bool, result: Result<(), bool>, raised_ms: u64) {
    let Some(m) = get() else {
        return;
    };
    let receiver = if configured {
        receiver.to_string()
    } else {
        "unconfigured".to_string()
    };
    let word = match result {
        Ok(()) => "delivered",
        Err(true) => "retryable_error",
        Err(false) => "error",
    };
    m.delivery_attempts
        .get_or_create(&ReceiverResult {
            receiver: receiver.clone(),
            result: word,
        })
        .inc();
    if result.is_ok() {
        let now = crate::rollout::plan::now_ms();
        m.alert_seconds
            .get_or_create(&ReceiverLabel { receiver })
            .observe(seconds(now.saturating_sub(raised_ms)));
    }
}

/// The content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A listener of its own serving `GET /metrics` (for `rollgate watch`,
/// which has no console): installs the registry, binds `listen`, serves
/// until `cancel` fires. Answers the bound address and the server's task.
pub async fn serve(
    listen: std::net::SocketAddr,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let metrics = install();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    metrics.encode_watch(),
                )
            }),
        )
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "only /metrics here\n") });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "The metrics listener failed.");
        }
    });
    Ok((addr, task))
}

/// Hook of `aws::retry::Retrying`: one attempt of `operation` ended.
pub fn aws_call(operation: &'static str, result: Result<(), bool>, elapsed: Duration) {
    let Some(m) = get() else {
        return;
    };
    let result = match result {
        Ok(()) => "ok",
        Err(true) => "retryable_error",
        Err(false) => "error",
    };
    m.aws_calls
        .get_or_create(&AwsCall { operation, result })
        .inc();
    m.aws_seconds
        .get_or_create(&AwsOp { operation })
        .observe(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_operations_never_carry_keys_or_names() {
        assert_eq!(consul_operation("/v1/kv/rollgate/services/web"), "kv");
        assert_eq!(consul_operation("/v1/health/service/web"), "health/service");
        assert_eq!(
            consul_operation("/v1/agent/check/update/service:i-1"),
            "agent/check/update"
        );
        assert_eq!(consul_operation("/v1/txn"), "txn");
        assert_eq!(consul_operation("/v1/acl/token/self"), "acl/token/self");
        assert_eq!(consul_operation("/v1/session/renew/abc"), "session/renew");
        assert_eq!(consul_operation("/v1/whatever/x"), "other");
    }
}

//! The JSON API under `/v1/`: what operators read (services, plans with
//! their diff, decisions, the active rollout, history, the outbox) and what
//! they do (approve, reject, pause, resume, abort, promote).
//!
//! Every handler authenticates the caller ([`Caller`]) and reads and
//! writes with the caller's token through the same store functions the CLI
//! uses (`Store::decide`, `Store::push_command`), so the answer is the same
//! on every replica, leader or not, and Consul's ACLs decide what is
//! allowed. Nothing here keeps state between requests.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ApiError;
use super::server::Shared;
use super::views::{self, PlanView, RolloutView, ServiceView};
use crate::consul::QueryOptions;
use crate::notify::outbox::Outbox;
use crate::rollout::machine::OperatorCommand;
use crate::rollout::machine::{Rollout, StableRef};
use crate::rollout::plan::{Decision, Millis, Plan, now_ms, parse_plan_id};
use crate::rollout::render;

/// The OpenAPI document, checked in at `docs/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

type ApiResult = Result<Response, ApiError>;

fn ok<T: Serialize>(status: StatusCode, body: &T) -> ApiResult {
    Ok((status, Json(body)).into_response())
}

async fn caller(state: &Shared, headers: &HeaderMap) -> Result<Caller, ApiError> {
    Caller::authenticate(&state.client, &state.prefix, headers).await
}

/// The configured service named `name`, else 404.
fn known<'a>(state: &'a Shared, name: &str) -> Result<&'a str, ApiError> {
    state
        .services
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.name.as_str())
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no service {name:?} in [[services]] (configured: {})",
                state
                    .services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The caller of a `/v1/services/{service}/...` read, the service
/// checked first (404 before any question to Consul).
#[derive(Debug)]
pub struct ForService {
    /// The configured service.
    svc: String,
    /// Who asks.
    c: Caller,
}

impl FromRequestParts<Shared> for ForService {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let Path(service) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let svc = known(state, &service)?.to_string();
        let c = caller(state, &parts.headers).await?;
        Ok(Self { svc, c })
    }
}

/// The service of a plan ID, checked: 400 when it is not a plan ID, 404
/// when its service is not configured.
pub(crate) fn plan_service<'a>(state: &'a Shared, id: &str) -> Result<&'a str, ApiError> {
    let Some((service, _)) = parse_plan_id(id) else {
        return Err(ApiError::BadRequest(format!(
            "{id:?} is not a plan ID (expected SERVICE-NUMBER, e.g. web-3)"
        )));
    };
    known(state, service).map_err(|_| ApiError::NotFound(format!("no plan {id}")))
}

/// `GET /v1/openapi.yaml`.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
        OPENAPI,
    )
        .into_response()
}

/// `GET /metrics`: no token needed (counters and states, no secrets).
pub async fn metrics(State(state): State<Shared>) -> Response {
    super::refresh::refresh(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

#[derive(Debug, Serialize)]
struct WhoAmI {
    who: String,
    acls: bool,
}

/// `GET /v1/whoami`: who the console takes the caller for.
pub async fn whoami(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let c = caller(&state, &headers).await?;
    ok(
        StatusCode::OK,
        &WhoAmI {
            who: c.who,
            acls: c.acls,
        },
    )
}

/// What the console shows of a service, read once with the caller's
/// token: the API's views and the page are drawn from it.
#[derive(Debug)]
pub(crate) struct Facts {
    /// Every plan, oldest first.
    pub plans: Vec<Plan>,
    /// The active rollout, if any.
    pub rollout: Option<Rollout>,
    /// The stable release, or why Consul refused to say.
    pub stable: Result<Option<StableRef>, String>,
}

impl Facts {
    /// Reads the facts of `service`.
    pub(crate) async fn read(c: &Caller, service: &str) -> Result<Facts, ApiError> {
        let plans: Vec<Plan> = c
            .store
            .plans(service)
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let rollout = c.store.rollout(service).await?.map(|(r, _)| r);
        // The stable record is the coordinator's; an operator token may not
        // read it (the CLI never does). Said so, not hidden.
        let stable = match c.store.stable(service).await {
            Ok(s) => Ok(s),
            Err(crate::rollout::store::StoreError::Consul(
                crate::consul::Error::PermissionDenied { body, .. },
            )) => Err(body),
            Err(e) => return Err(e.into()),
        };
        Ok(Facts {
            plans,
            rollout,
            stable,
        })
    }

    /// The service at a glance.
    pub(crate) fn view(&self, service: &str, now: Millis) -> ServiceView {
        views::service(
            service,
            &self.plans,
            self.rollout.as_ref(),
            self.stable.clone(),
            now,
        )
    }

    /// Every plan, newest first, with its decision and outcome.
    pub(crate) fn history(&self) -> Vec<views::HistoryEntry> {
        views::history(&self.plans)
    }
}

/// A service at a glance, read with the caller's token.
pub(crate) async fn service_view(c: &Caller, service: &str) -> Result<ServiceView, ApiError> {
    Ok(Facts::read(c, service).await?.view(service, now_ms()))
}

#[derive(Debug, Serialize)]
struct Services {
    services: Vec<ServiceView>,
}

/// `GET /v1/services`.
pub async fn services(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let c = caller(&state, &headers).await?;
    let mut out = Vec::new();
    for s in &state.services {
        out.push(service_view(&c, &s.name).await?);
    }
    ok(StatusCode::OK, &Services { services: out })
}

/// `GET /v1/services/{service}`.
pub async fn service(ForService { svc, c }: ForService) -> ApiResult {
    let svc = svc.as_str();
    ok(StatusCode::OK, &service_view(&c, svc).await?)
}

#[derive(Debug, Serialize)]
struct Plans {
    plans: Vec<PlanView>,
}

/// `GET /v1/services/{service}/plans`: newest first, each with its diff.
pub async fn plans(ForService { svc, c }: ForService) -> ApiResult {
    let svc = svc.as_str();
    let now = now_ms();
    let mut plans: Vec<PlanView> = c
        .store
        .plans(svc)
        .await?
        .into_iter()
        .map(|(p, _)| PlanView::new(p, now))
        .collect();
    plans.reverse();
    ok(StatusCode::OK, &Plans { plans })
}

#[derive(Debug, Serialize)]
struct Decisions {
    decisions: Vec<views::DecisionView>,
}

/// `GET /v1/services/{service}/decisions`: every plan's decision, newest
/// first.
pub async fn decisions(ForService { svc, c }: ForService) -> ApiResult {
    let svc = svc.as_str();
    let mut decisions: Vec<_> = c
        .store
        .plans(svc)
        .await?
        .iter()
        .map(|(p, _)| views::DecisionView::of(p))
        .collect();
    decisions.reverse();
    ok(StatusCode::OK, &Decisions { decisions })
}

#[derive(Debug, Serialize)]
struct ActiveRollout {
    rollout: Option<RolloutView>,
}

/// The active rollout of `svc` in full (its instances from Consul's
/// health answer), `None` when none runs.
pub(crate) async fn rollout_view(c: &Caller, svc: &str) -> Result<Option<RolloutView>, ApiError> {
    let Some((rollout, _)) = c.store.rollout(svc).await? else {
        return Ok(None);
    };
    let plan = c.store.plan(&rollout.spec.id).await.ok().map(|(p, _)| p);
    let health = c
        .store
        .client()
        .health_service(svc, false, None, &QueryOptions::default())
        .await?;
    Ok(Some(RolloutView::new(
        &rollout,
        plan.as_ref(),
        &health.value,
        health.meta.filtered_by_acls,
        now_ms(),
    )))
}

/// `GET /v1/services/{service}/rollout`: the active rollout (`null` when
/// none), each instance with its checks.
pub async fn rollout(ForService { svc, c }: ForService) -> ApiResult {
    let svc = svc.as_str();
    let rollout = rollout_view(&c, svc).await?;
    ok(StatusCode::OK, &ActiveRollout { rollout })
}

#[derive(Debug, Serialize)]
struct History {
    history: Vec<views::HistoryEntry>,
}

/// `GET /v1/services/{service}/history`: every plan, newest first, with
/// its decision and outcome.
pub async fn history(ForService { svc, c }: ForService) -> ApiResult {
    let svc = svc.as_str();
    let history = history_of(&c, svc).await?;
    ok(StatusCode::OK, &History { history })
}

/// Every plan of `svc`, newest first, with its decision and outcome.
async fn history_of(c: &Caller, svc: &str) -> Result<Vec<views::HistoryEntry>, ApiError> {
    let plans: Vec<Plan> = c
        .store
        .plans(svc)
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    Ok(views::history(&plans))
}

/// `GET /v1/plans/{plan}`: one plan and its diff.
pub async fn plan(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    plan_service(&state, &id)?;
    let c = caller(&state, &headers).await?;
    let (plan, _) = c.store.plan(&id).await?;
    ok(StatusCode::OK, &PlanView::new(plan, now_ms()))
}

/// The body of reject and abort.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    #[serde(default)]
    reason: String,
}

/// Reads `{"reason": "..."}`; an empty body is no reason.
fn reason(body: &Bytes) -> Result<String, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    let r: Reason = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON like {{\"reason\": \"why\"}}: {e}"
        ))
    })?;
    checked_reason(&r.reason)
}

/// A reason as given (API body or page form): trimmed, at most 1000
/// characters.
pub(crate) fn checked_reason(text: &str) -> Result<String, ApiError> {
    let reason = text.trim();
    if reason.chars().count() > 1000 {
        return Err(ApiError::BadRequest(
            "the reason is longer than 1000 characters".into(),
        ));
    }
    Ok(reason.to_string())
}

#[derive(Debug, Serialize)]
struct Decided {
    message: String,
    plan: PlanView,
}

/// Decides plan `id` as `c`: approves it, or rejects it with `reject`'s
/// reason. The one path of every decision in the console (API and page):
/// the store's check-and-set with the caller's token, so Consul's ACLs
/// decide, and a plan already decided (or expired) is a 409 naming how.
pub(crate) async fn decide_plan(
    state: &Shared,
    c: &Caller,
    id: &str,
    reject: Option<String>,
) -> Result<Plan, ApiError> {
    plan_service(state, id)?;
    let now = now_ms();
    let decision = match reject {
        None => Decision::Approved {
            by: c.who.clone(),
            at: now,
        },
        Some(reason) => Decision::Rejected {
            by: c.who.clone(),
            at: now,
            reason,
        },
    };
    match c.store.decide(id, decision, now).await? {
        Ok(plan) => {
            tracing::info!(plan = %plan.id, by = %c.who, decision = plan.decision.word(),
                "Plan decided in the console.");
            Ok(plan)
        }
        Err(plan) => {
            let state = match &plan.decision {
                Decision::Pending { .. } => "expired (nobody answered in time)".to_string(),
                other => render::decision(other),
            };
            Err(ApiError::Conflict(format!(
                "plan {} cannot be decided: it is {state}",
                plan.id
            )))
        }
    }
}

async fn decide(
    state: &Shared,
    headers: &HeaderMap,
    id: &str,
    reject: Option<String>,
) -> ApiResult {
    plan_service(state, id)?;
    let c = caller(state, headers).await?;
    let plan = decide_plan(state, &c, id, reject).await?;
    let message = format!("Plan {} {}.", plan.id, render::decision(&plan.decision));
    ok(
        StatusCode::OK,
        &Decided {
            message,
            plan: PlanView::new(plan, now_ms()),
        },
    )
}

/// `POST /v1/plans/{plan}/approve`.
pub async fn approve(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    decide(&state, &headers, &id, None).await
}

/// `POST /v1/plans/{plan}/reject` with `{"reason": "..."}` (required).
pub async fn reject(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let why = reason(&body)?;
    if why.is_empty() {
        return Err(ApiError::BadRequest(
            "a rejection needs a reason: send {\"reason\": \"why\"}".into(),
        ));
    }
    decide(&state, &headers, &id, Some(why)).await
}

#[derive(Debug, Serialize)]
struct Queued {
    message: String,
}

/// An operator command on a service's active rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop at the next safe point.
    Pause,
    /// Go on after a pause.
    Resume,
    /// Go on past a canary wait.
    Promote,
    /// Revert to the stable release (with a reason).
    Abort,
}

impl Command {
    /// The last segment of its route (`/v1/services/{service}/pause`).
    pub fn word(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Promote => "promote",
            Command::Abort => "abort",
        }
    }

    /// The stored command, from `by` with `reason` (abort only; empty: a
    /// default naming the console).
    fn stored(self, by: &str, reason: String) -> OperatorCommand {
        match self {
            Command::Pause => OperatorCommand::Pause,
            Command::Resume => OperatorCommand::Resume,
            Command::Promote => OperatorCommand::Promote,
            Command::Abort => OperatorCommand::Abort {
                by: by.to_string(),
                reason: if reason.is_empty() {
                    "aborted in the console".to_string()
                } else {
                    reason
                },
            },
        }
    }
}

/// Queues `command` for `service`'s active rollout as `c`, answering what
/// was asked. The one path of every command in the console (API and
/// page): the store's create-only write with the caller's token.
pub(crate) async fn queue(
    state: &Shared,
    c: &Caller,
    service: &str,
    command: Command,
    reason: String,
) -> Result<String, ApiError> {
    let svc = known(state, service)?;
    let Some((rollout, _)) = c.store.rollout(svc).await? else {
        return Err(ApiError::Conflict(format!(
            "no rollout in progress for {svc}; GET /v1/services/{svc}/history shows the last one"
        )));
    };
    let word = command.word();
    c.store
        .push_command(svc, &command.stored(&c.who, reason))
        .await?;
    tracing::info!(service = %svc, rollout = %rollout.spec.id, by = %c.who, command = word,
        "Operator command queued from the console.");
    Ok(format!(
        "Asked rollout {} of {svc} (now {}) to {word}; the leader applies it on its next step.",
        rollout.spec.id,
        rollout.state.name()
    ))
}

/// The handler of `POST /v1/services/{service}/<command>` (abort takes an
/// optional `{"reason": "..."}`; the others no body).
pub fn command(command: Command) -> MethodRouter<Shared> {
    post(
        move |State(state): State<Shared>,
              Path(service): Path<String>,
              headers: HeaderMap,
              body: Bytes| async move {
            let result: ApiResult = async {
                let why = if command == Command::Abort {
                    reason(&body)?
                } else {
                    String::new()
                };
                known(&state, &service)?;
                let c = caller(&state, &headers).await?;
                let message = queue(&state, &c, &service, command, why).await?;
                ok(StatusCode::ACCEPTED, &Queued { message })
            }
            .await;
            result
        },
    )
}

/// The alert outbox as operators read it.
#[derive(Debug, Serialize)]
pub struct OutboxView {
    /// Entries not yet delivered to every receiver.
    pub depth: usize,
    /// Per receiver, its copies pending, delivered and failing.
    pub receivers: BTreeMap<String, views::ReceiverCounts>,
    /// Every entry, newest first.
    pub entries: Vec<views::OutboxEntry>,
}

/// Reads the outbox with the caller's token.
pub(crate) async fn outbox_view(state: &Shared, c: &Caller) -> Result<OutboxView, ApiError> {
    let outbox = Outbox::new(c.store.client().clone(), &state.prefix, &Default::default());
    // Through the records' list, which refuses an answer Consul filtered.
    let listed = outbox
        .records()
        .list::<crate::notify::outbox::Entry>(outbox.prefix())
        .await?;
    let mut receivers: BTreeMap<String, views::ReceiverCounts> = state
        .receivers
        .iter()
        .map(|r| (r.clone(), views::ReceiverCounts::default()))
        .collect();
    let mut entries = Vec::new();
    let mut depth = 0;
    for (key, entry) in listed {
        let Ok(entry) = entry.map(|v| v.value) else {
            continue;
        };
        if entry.done_ms.is_none() {
            depth += 1;
        }
        let view = views::OutboxEntry::of(&key, &entry);
        for (receiver, d) in &view.deliveries {
            receivers
                .entry(receiver.clone())
                .or_default()
                .count(d.state);
        }
        entries.push(view);
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.enqueued_at));
    Ok(OutboxView {
        depth,
        receivers,
        entries,
    })
}

/// `GET /v1/outbox`: every entry, and per receiver its copies pending,
/// delivered and failing.
pub async fn outbox(State(state): State<Shared>, headers: HeaderMap) -> ApiResult {
    let c = caller(&state, &headers).await?;
    ok(StatusCode::OK, &outbox_view(&state, &c).await?)
}

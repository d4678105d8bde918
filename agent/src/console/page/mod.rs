//! The console's web page: server-rendered HTML that reads well with
//! JavaScript off (every action is a form that posts and redirects) and
//! updates live with it (an event stream per service page, [`live`]).
//!
//! - [`session`]: the login session (cookie `rollgate_session`, the token
//!   kept server-side, per replica) and the CSRF token of its forms.
//! - [`html`]: the rendering, from the API's views, with escaping.
//! - [`live`]: `GET /services/{service}/events`, fed by Consul blocking
//!   queries with the operator's token.
//!
//! Every action goes through the API's own code ([`api::decide_plan`],
//! [`api::queue`]) with the operator's token: the same check-and-set, the
//! same refusals, the same records. The CSRF token is checked before
//! anything is read or written. A Consul token is never put in a page, a
//! URL or a log line.

pub mod html;
pub mod live;
pub mod session;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, post};

use super::api::{self, Command, Facts};
use super::auth::{self, Caller, Via};
use super::error::ApiError;
use super::server::Shared;
use super::views::{self, PlanView};
use crate::config::Secret;
use crate::consul::QueryOptions;
use crate::rollout::plan::{Plan, now_ms};
use html::Viewer;
use session::Session;

/// The page's stylesheet.
pub const CSS: &str = include_str!("../assets/console.css");
/// The page's script (vanilla, no build step).
pub const JS: &str = include_str!("../assets/console.js");

/// The headers every page carries: no caching (pages show one operator's
/// view), no framing, scripts and styles only from the console itself.
fn page(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

fn secure_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// The session of a page request, or the redirect to the login page.
fn session_or_login(state: &Shared, headers: &HeaderMap) -> Result<Session, Box<Response>> {
    state
        .sessions
        .get(headers)
        .ok_or_else(|| Box::new(see_other("/login")))
}

/// The caller of a session: acts with its token, never asks Consul again
/// who it is.
fn caller(state: &Shared, s: &Session) -> Caller {
    Caller::resume(
        &state.client,
        &state.prefix,
        s.token.clone(),
        &s.who,
        s.acls,
    )
}

/// The caller of a read that a page embeds (the timeline image, say): the
/// session's operator when the request carries the page's cookie, else
/// the API's token headers. For reads only: a write by cookie needs the
/// form's CSRF token ([`session::Sessions::check_csrf`]).
pub async fn reader(state: &Shared, headers: &HeaderMap) -> Result<Caller, ApiError> {
    match state.sessions.get(headers) {
        Some(s) => Ok(caller(state, &s)),
        None => Caller::authenticate(&state.client, &state.prefix, headers).await,
    }
}

fn viewer(s: &Session) -> Viewer<'_> {
    Viewer {
        who: &s.who,
        csrf: &s.csrf,
    }
}

/// An error as a page: the API's status and text.
fn failed(s: Option<&Session>, after_post: bool, e: &ApiError) -> Response {
    page(
        e.status(),
        html::error(s.map(viewer), after_post, &e.to_string()),
    )
}

/// A form body's fields (`application/x-www-form-urlencoded`).
fn fields(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The configured service `name`.
fn known(state: &Shared, name: &str) -> Result<(), ApiError> {
    if state.services.iter().any(|s| s.name == name) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "no service {name:?} in [[services]]"
        )))
    }
}

/// `GET /assets/console.css`.
pub async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// `GET /assets/console.js`.
pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(kind: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

/// `GET /login`: a token field (ACLs on) or a name field (ACLs off).
pub async fn login_form(State(state): State<Shared>) -> Response {
    match auth::acls_enabled(&state.client).await {
        Ok(acls) => page(StatusCode::OK, html::login(acls, None)),
        Err(e) => failed(None, false, &e),
    }
}

/// `POST /login` with `token=` (ACLs on) or `operator=` (ACLs off).
pub async fn login(State(state): State<Shared>, body: Bytes) -> Response {
    let f = fields(&body);
    let token = f.get("token").map(|t| t.trim()).filter(|t| !t.is_empty());
    let operator = f
        .get("operator")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty());
    let refused =
        |acls: bool, e: &ApiError| page(e.status(), html::login(acls, Some(&e.to_string())));
    let (secret, c) = match (token, operator) {
        (Some(t), _) => {
            if !t.chars().all(|c| c.is_ascii_graphic()) {
                let e = ApiError::BadRequest(
                    "the token has characters a Consul token cannot have".into(),
                );
                return refused(true, &e);
            }
            let secret = Secret::new(t);
            let off = || {
                Err(ApiError::BadRequest(
                    "Consul's ACLs are off, so no token can say who you are: log in with your name"
                        .into(),
                ))
            };
            match Caller::identify(
                &state.client,
                &state.prefix,
                Some(secret.clone()),
                Via::Form,
                off,
            )
            .await
            {
                Ok(c) => (Some(secret), c),
                Err(e @ ApiError::BadRequest(_)) => return refused(false, &e),
                Err(e) => return refused(true, &e),
            }
        }
        (None, Some(name)) => match auth::acls_enabled(&state.client).await {
            Ok(true) => {
                let e = ApiError::Unauthenticated(
                    "Consul's ACLs are on: log in with your Consul ACL token".into(),
                );
                return refused(true, &e);
            }
            Ok(false) if !auth::valid_operator(name) => {
                let e = ApiError::BadRequest(
                    "a name is letters, digits, spaces, '.', '_', '@', '-', at most 64".into(),
                );
                return refused(false, &e);
            }
            Ok(false) => (
                None,
                Caller::resume(&state.client, &state.prefix, None, name, false),
            ),
            Err(e) => return failed(None, false, &e),
        },
        (None, None) => {
            let acls = auth::acls_enabled(&state.client).await.unwrap_or(true);
            let e = ApiError::Unauthenticated(if acls {
                "enter your Consul ACL token".into()
            } else {
                "enter your name".into()
            });
            return refused(acls, &e);
        }
    };
    tracing::info!(who = %c.who, "Operator logged in to the console.");
    let cookie = state.sessions.create(secret, c.who, c.acls);
    let mut r = see_other("/");
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    r
}

/// `POST /logout` (CSRF-checked): forgets the session and the cookie.
pub async fn logout(State(state): State<Shared>, headers: HeaderMap, _: Posted) -> Response {
    state.sessions.remove(&headers);
    let mut r = see_other("/login");
    r.headers_mut()
        .insert(header::SET_COOKIE, state.sessions.clear());
    r
}

fn csrf_refused(s: Option<&Session>, e: &session::CsrfError) -> Response {
    tracing::info!(reason = %e, "Console form refused (CSRF).");
    page(
        StatusCode::FORBIDDEN,
        html::error(
            s.map(viewer),
            true,
            &format!("Refused, nothing was done: {e}"),
        ),
    )
}

/// `GET /`: every service at a glance.
pub async fn index(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let s = match session_or_login(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let c = caller(&state, &s);
    let mut list = Vec::new();
    for svc in &state.services {
        match api::service_view(&c, &svc.name).await {
            Ok(v) => list.push(v),
            Err(e) => return failed(Some(&s), false, &e),
        }
    }
    page(StatusCode::OK, html::services(viewer(&s), &list))
}

/// Reads and renders the live section of `service` for `c`.
pub(crate) async fn live_html(c: &Caller, service: &str, csrf: &str) -> Result<String, ApiError> {
    let now = now_ms();
    let facts = Facts::read(c, service).await?;
    let view = facts.view(service, now);
    let history = facts.history();
    let health = c
        .store
        .client()
        .health_service(service, false, None, &QueryOptions::default())
        .await?;
    let rollout = facts.rollout.as_ref().map(|r| {
        let plan = facts.plans.iter().find(|p| p.id == r.spec.id);
        views::RolloutView::new(r, plan, &health.value, health.meta.filtered_by_acls, now)
    });
    let last: Option<&Plan> = facts.plans.iter().rev().find(|p| p.outcome.is_some());
    let ended = match (&rollout, last, &view.last_outcome) {
        (None, Some(p), Some(o)) => {
            let target = p.target.image_id.as_str();
            Some(html::Ended {
                plan: &o.plan,
                outcome: o.outcome,
                at: o.at,
                reason: &o.reason,
                batches: p.batches,
                from_version: &p.current.version,
                to_version: &p.target.version,
                instances: views::instances(
                    &health.value,
                    |_, image| !image.is_empty() && image == target,
                    Default::default(),
                ),
            })
        }
        _ => None,
    };
    Ok(html::live_section(
        csrf,
        &html::Live {
            service,
            view: &view,
            rollout: rollout.as_ref(),
            ended,
            history: &history,
            now,
        },
    ))
}

/// `GET /services/{service}`.
pub async fn service(
    State(state): State<Shared>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = match session_or_login(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Err(e) = known(&state, &service) {
        return failed(Some(&s), false, &e);
    }
    service_page(&state, &s, &service, None, StatusCode::OK).await
}

async fn service_page(
    state: &Shared,
    s: &Session,
    service: &str,
    action_error: Option<&str>,
    status: StatusCode,
) -> Response {
    let c = caller(state, s);
    match live_html(&c, service, &s.csrf).await {
        Ok(live) => page(
            status,
            html::service(viewer(s), service, &live, action_error),
        ),
        Err(e) => failed(Some(s), action_error.is_some(), &e),
    }
}

/// `GET /plans/{plan}`.
pub async fn plan(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = match session_or_login(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    plan_page(&state, &s, &id, None, StatusCode::OK).await
}

async fn plan_page(
    state: &Shared,
    s: &Session,
    id: &str,
    action_error: Option<&str>,
    status: StatusCode,
) -> Response {
    let read = async {
        api::plan_service(state, id)?;
        let (plan, _) = caller(state, s).store.plan(id).await?;
        Ok::<_, ApiError>(plan)
    };
    match read.await {
        Ok(plan) => page(
            status,
            html::plan(viewer(s), &PlanView::new(plan, now_ms()), action_error),
        ),
        Err(e) => match action_error {
            // The action's refusal matters more than the page.
            Some(a) => page(status, html::error(Some(viewer(s)), true, a)),
            None => failed(Some(s), false, &e),
        },
    }
}

/// A logged-in operator's form post: the session whose CSRF token the
/// form carries (checked before anything else, so a refused post reads
/// and writes nothing), and its `reason` field (trimmed, checked).
#[derive(Debug)]
pub struct Posted {
    /// The session.
    session: Session,
    /// `reason=`, trimmed; empty when absent.
    reason: String,
}

impl FromRequest<Shared> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, Response> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let f = fields(&body);
        let session = state
            .sessions
            .check_csrf(&headers, f.get("csrf").map(String::as_str))
            .map_err(|e| csrf_refused(state.sessions.get(&headers).as_ref(), &e))?;
        let reason = api::checked_reason(f.get("reason").map_or("", String::as_str))
            .map_err(|e| failed(Some(&session), true, &e))?;
        Ok(Posted { session, reason })
    }
}

/// `POST /plans/{plan}/approve` and `/reject` (`reason=`), `csrf=`.
pub fn decide(reject: bool) -> MethodRouter<Shared> {
    post(
        move |State(state): State<Shared>, Path(id): Path<String>, p: Posted| async move {
            let s = &p.session;
            let result = if reject && p.reason.is_empty() {
                Err(ApiError::BadRequest(
                    "a rejection needs a reason: write why in the field beside Reject".into(),
                ))
            } else {
                let c = caller(&state, s);
                api::decide_plan(&state, &c, &id, reject.then_some(p.reason.clone())).await
            };
            match result {
                Ok(plan) => see_other(&format!("/plans/{}", plan.id)),
                Err(e) => plan_page(&state, s, &id, Some(&e.to_string()), e.status()).await,
            }
        },
    )
}

/// `POST /services/{service}/<command>`, `csrf=` (abort: `reason=`).
pub fn command(command: Command) -> MethodRouter<Shared> {
    post(
        move |State(state): State<Shared>, Path(service): Path<String>, p: Posted| async move {
            let s = &p.session;
            if let Err(e) = known(&state, &service) {
                return failed(Some(s), true, &e);
            }
            let c = caller(&state, s);
            match api::queue(&state, &c, &service, command, p.reason.clone()).await {
                Ok(_) => see_other(&format!("/services/{service}")),
                Err(e) => service_page(&state, s, &service, Some(&e.to_string()), e.status()).await,
            }
        },
    )
}

/// `GET /outbox`.
pub async fn outbox(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let s = match session_or_login(&state, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match api::outbox_view(&state, &caller(&state, &s)).await {
        Ok(o) => page(StatusCode::OK, html::outbox(viewer(&s), &o)),
        Err(e) => failed(Some(&s), false, &e),
    }
}

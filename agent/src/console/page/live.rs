//! `GET /services/{service}/events`: the service page's live section as a
//! Server-Sent Events stream.
//!
//! Each stream follows, with the operator's own token, the keys the page
//! shows through Consul blocking queries ([`crate::consul::watch::Watch`]):
//! the service's plans (`<prefix>/services/<service>/plans/`, decisions and
//! outcomes), its active rollout record, its stable release, and Consul's
//! health answer for the service (instances and checks). Nothing polls: a
//! stream costs three or four held requests until something changes.
//!
//! On every change the live section is rendered again ([`super::live_html`])
//! and sent as the data of an `update` event; the script swaps it in. A
//! comment goes out every [`KEEPALIVE`] so proxies keep the connection
//! open and a client that left is noticed. The queries live inside the
//! stream: when the client disconnects, the server drops the stream and
//! with it the in-flight requests to Consul.
//!
//! A read Consul refuses (the token was deleted since login, say) is sent
//! as a `problem` event with the reason; the stream goes on (the watches
//! back off on errors by themselves).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

use super::super::auth::Caller;
use super::super::server::Shared;
use crate::consul::watch::{Watch, WatchConfig};

/// The gap between keepalive comments.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// `GET /services/{service}/events`.
pub async fn events(
    State(state): State<Shared>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(s) = state.sessions.get(&headers) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no session: log in at /login first",
        )
            .into_response();
    };
    if !state.services.iter().any(|x| x.name == service) {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no service {service:?} in [[services]]"),
        )
            .into_response();
    }
    let c = super::caller(&state, &s);
    let mut r = Sse::new(updates(c, &state.prefix, service, s.csrf, state.max_wait))
        .keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive"))
        .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// The stream of `update` events of `service` as `c` sees it.
pub fn updates(
    c: Caller,
    prefix: &str,
    service: String,
    csrf: String,
    wait: Duration,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + use<> {
    let config = WatchConfig {
        wait,
        ..WatchConfig::default()
    };
    let client = c.store.client().clone();
    let base = format!("{prefix}/services/{service}");
    let plans = {
        let (client, key) = (client.clone(), format!("{base}/plans/"));
        Watch::new("console plans", config.clone(), move |opts| {
            let (client, key) = (client.clone(), key.clone());
            async move { client.kv_list(&key, &opts).await }
        })
    };
    let keys = {
        // The rollout record and the stable release: one watch per key.
        let (client, rollout, stable) = (
            client.clone(),
            format!("{base}/rollout"),
            format!("{base}/stable"),
        );
        (
            Watch::new("console rollout", config.clone(), {
                let client = client.clone();
                move |opts| {
                    let (client, key) = (client.clone(), rollout.clone());
                    async move { client.kv_get(&key, &opts).await }
                }
            }),
            Watch::new("console stable", config.clone(), move |opts| {
                let (client, key) = (client.clone(), stable.clone());
                async move { client.kv_get(&key, &opts).await }
            }),
        )
    };
    let health = {
        let (client, name) = (client, service.clone());
        Watch::new("console health", config, move |opts| {
            let (client, name) = (client.clone(), name.clone());
            async move { client.health_service(&name, false, None, &opts).await }
        })
    };
    let (rollout, stable) = keys;
    let start = Follow {
        c,
        service,
        csrf,
        first: true,
    };
    futures::stream::unfold(
        (start, plans, rollout, stable, health),
        |(f, mut plans, mut rollout, mut stable, mut health)| async move {
            if f.first {
                // The first answers come at once: one update for all of
                // them (the page may have changed since it was rendered).
                let _ = plans.next().await;
                let _ = rollout.next().await;
                let _ = stable.next().await;
                let _ = health.next().await;
            } else {
                loop {
                    let changed = tokio::select! {
                        r = plans.next() => r.map(|_| ()),
                        r = rollout.next() => r.map(|_| ()),
                        r = stable.next() => r.map(|_| ()),
                        r = health.next() => r.map(|_| ()),
                    };
                    match changed {
                        Ok(()) => break,
                        // The watch waits out its back-off on its next call.
                        Err(e) => tracing::debug!(watch = %e.name, error = %e.source,
                            retry_in = ?e.retry_in, "Console event stream: Consul read failed; retrying."),
                    }
                }
            }
            let event = match super::live_html(&f.c, &f.service, &f.csrf).await {
                Ok(html) => Event::default().event("update").data(html),
                Err(e) => Event::default().event("problem").data(e.to_string()),
            };
            let next = Follow { first: false, ..f };
            Some((Ok(event), (next, plans, rollout, stable, health)))
        },
    )
}

/// What a stream renders with.
struct Follow {
    /// The operator (their token).
    c: Caller,
    /// The service.
    service: String,
    /// The session's CSRF token, for the forms of the section.
    csrf: String,
    /// Whether no update was sent yet.
    first: bool,
}

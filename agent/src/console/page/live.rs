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
//! and, when it differs from the last one sent, sent as the data of an
//! `update` event; the script swaps it in. Each watch runs in a task of
//! its own (so one change never restarts the others' held queries), and
//! the stream holds a guard that stops them all when it is dropped. A
//! comment goes out every [`KEEPALIVE`] so proxies keep the connection
//! open and a client that left is noticed: when the client disconnects,
//! the server drops the stream, whose guard stops the watches and with
//! them their in-flight requests to Consul. The console's shutdown ends
//! every stream.
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
use std::future::Future;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::super::auth::Caller;
use super::super::server::Shared;
use crate::consul::watch::{Watch, WatchConfig};
use crate::consul::{Error, QueryOptions, Response as ConsulResponse};

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
    let stop = state.cancel.clone();
    let mut r = Sse::new(updates(
        c,
        &state.prefix,
        service,
        s.csrf,
        state.max_wait,
        stop,
    ))
    .keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive"))
    .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// The stream of `update` events of `service` as `c` sees it, until the
/// client leaves or `stop` fires (the console shuts down).
pub fn updates(
    c: Caller,
    prefix: &str,
    service: String,
    csrf: String,
    wait: Duration,
    stop: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + use<> {
    let config = WatchConfig {
        wait,
        ..WatchConfig::default()
    };
    let client = c.store.client().clone();
    let base = format!("{prefix}/services/{service}");
    // A change is a signal; a signal waiting to be rendered absorbs the
    // next ones (the render reads everything afresh).
    let (tx, rx) = mpsc::channel::<()>(1);
    let watches = stop.child_token();
    {
        let (client, key) = (client.clone(), format!("{base}/plans/"));
        let w = Watch::new("console plans", config.clone(), move |opts| {
            let (client, key) = (client.clone(), key.clone());
            async move { client.kv_list(&key, &opts).await }
        });
        follow(w, tx.clone(), watches.clone());
    }
    for key in ["rollout", "stable"] {
        let (client, key) = (client.clone(), format!("{base}/{key}"));
        let w = Watch::new("console key", config.clone(), move |opts| {
            let (client, key) = (client.clone(), key.clone());
            async move { client.kv_get(&key, &opts).await }
        });
        follow(w, tx.clone(), watches.clone());
    }
    {
        let (client, name) = (client, service.clone());
        let w = Watch::new("console health", config, move |opts| {
            let (client, name) = (client.clone(), name.clone());
            async move { client.health_service(&name, false, None, &opts).await }
        });
        follow(w, tx, watches.clone());
    }
    let start = Follow {
        c,
        service,
        csrf,
        last: None,
        changes: rx,
        stop,
        _watches: watches.drop_guard(),
    };
    futures::stream::unfold(start, |mut f| async move {
        loop {
            tokio::select! {
                _ = f.stop.cancelled() => return None,
                signal = f.changes.recv() => signal?,
            }
            let (kind, data) = match super::live_html(&f.c, &f.service, &f.csrf).await {
                Ok(html) => ("update", html),
                Err(e) => ("problem", e.to_string()),
            };
            // Consul answers a change that this page does not show (a
            // check's output it already had, say): nothing to send.
            if f.last.as_deref() == Some(data.as_str()) {
                continue;
            }
            let event = Event::default().event(kind).data(&data);
            f.last = Some(data);
            return Some((Ok(event), f));
        }
    })
}

/// Runs `watch` in a task that signals every change on `changed`, until
/// `stop` fires (the stream was dropped: its guard cancels it) or nobody
/// listens. Its in-flight query to Consul is dropped with it.
fn follow<T, F, Fut>(mut watch: Watch<T, F>, changed: mpsc::Sender<()>, stop: CancellationToken)
where
    T: PartialEq + Clone + Send + Sync + 'static,
    F: FnMut(QueryOptions) -> Fut + Send + 'static,
    Fut: Future<Output = Result<ConsulResponse<T>, Error>> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                next = watch.next() => match next {
                    Ok(_) => {
                        if let Err(TrySendError::Closed(())) = changed.try_send(()) {
                            return;
                        }
                    }
                    // The watch waits out its back-off on its next call.
                    Err(e) => tracing::debug!(watch = %e.name, error = %e.source,
                        retry_in = ?e.retry_in, "Console event stream: Consul read failed; retrying."),
                },
            }
        }
    });
}

/// What a stream renders with.
struct Follow {
    /// The operator (their token).
    c: Caller,
    /// The service.
    service: String,
    /// The session's CSRF token, for the forms of the section.
    csrf: String,
    /// The data of the last event sent.
    last: Option<String>,
    /// A signal per change seen by the watches.
    changes: mpsc::Receiver<()>,
    /// The console's shutdown.
    stop: CancellationToken,
    /// Stops the watches when the stream is dropped.
    _watches: DropGuard,
}

//! `GET /services/{service}/events`: the service page's live section as a
//! Server-Sent Events stream.
//!
//! **One follower per (service, reader), shared by its streams.** A
//! follower follows, with the reader's token, the keys the page shows
//! through Consul blocking queries ([`crate::consul::watch::Watch`]): the
//! service's plans (`<prefix>/services/<service>/plans/`, decisions and
//! outcomes), its active rollout record, its stable release, and Consul's
//! health answer for the service (instances and checks). Nothing polls: a
//! follower costs four held requests until something changes. On every
//! change it renders the live section again ([`super::live_html`]) and,
//! when it differs from the last render, publishes it on a
//! [`tokio::sync::watch`] channel; every stream of the follower sends it
//! as the data of an `update` event, and the script swaps it in. So a
//! change costs one set of reads and one render however many pages are
//! open (the bench's 50 streams of one operator cost what one costs). A
//! stream that falls behind skips to the latest render.
//!
//! **Why sharing is safe.** The console reads with the *caller's* token,
//! and under ACLs two operators may see different things. Streams share a
//! follower only when their sessions hold the same Consul token (the
//! secret itself, compared in memory; it is never logged or sent) and the
//! same ACL mode: the same token is the same policy, so every stream of a
//! follower could read exactly what the follower read, and a stream never
//! receives data its own token could not read. Two logins with the same
//! token share; operators with different tokens never do. With ACLs off
//! there is no token and every reader reads the same.
//!
//! **The CSRF token is the per-stream part.** The follower renders the
//! forms with a random placeholder of its own (256 bits, never sent, so
//! no data read from Consul can hold it); each stream puts its session's
//! CSRF token in its place as it sends, so every form carries the token
//! that [`super::session::Sessions::check_csrf`] checks for that session.
//!
//! Each watch runs in a task of its own (so one change never restarts the
//! others' held queries). Every stream holds its follower; when the last
//! stream of a follower is dropped (its client left: a comment goes out
//! every [`KEEPALIVE`] so proxies keep the connection open and a client
//! that left is noticed), the follower's guard stops its watches and
//! render, and with them their in-flight requests to Consul. The console's
//! shutdown ends every stream and follower.
//!
//! A read Consul refuses (the token was deleted since login, say) is sent
//! as a `problem` event with the reason; the stream goes on (the watches
//! back off on errors by themselves).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use std::future::Future;

use futures::Stream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::super::auth::Caller;
use super::super::server::Shared;
use super::session::Session;
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
    let follower = state.live.follower(&s, &service, || {
        Follower::start(
            super::caller(&state, &s),
            &state.prefix,
            service.clone(),
            state.max_wait,
            &state.cancel,
        )
    });
    let mut r = Sse::new(updates(follower, s.csrf, state.cancel.clone()))
        .keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive"))
        .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// Who a follower reads as: streams with equal keys share it. Holds the
/// token's secret (as the session table does), so it has no `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    /// The service.
    service: String,
    /// Whether Consul's ACLs were on at login.
    acls: bool,
    /// The session's Consul token (`None` with ACLs off).
    token: Option<String>,
}

/// This console's followers, one per (service, reader) with a stream open.
#[derive(Default)]
pub struct Followers {
    /// Key → the follower, while a stream holds it.
    map: Mutex<HashMap<Key, Weak<Follower>>>,
}

impl std::fmt::Debug for Followers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys: each holds a token.
        f.debug_struct("Followers")
            .field("running", &self.running())
            .finish()
    }
}

impl Followers {
    /// The follower of `service` as session `s` reads it: the one its
    /// streams share, or a new one from `start`.
    fn follower(
        &self,
        s: &Session,
        service: &str,
        start: impl FnOnce() -> Follower,
    ) -> Arc<Follower> {
        let key = Key {
            service: service.to_string(),
            acls: s.acls,
            token: s.token.as_ref().map(|t| t.expose().to_string()),
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get(&key).and_then(Weak::upgrade) {
            return f;
        }
        // Forget the followers whose last stream has gone.
        map.retain(|_, f| f.strong_count() > 0);
        let f = Arc::new(start());
        map.insert(key, Arc::downgrade(&f));
        f
    }

    /// How many followers run (a stream holds them).
    pub fn running(&self) -> usize {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|f| f.strong_count() > 0).count()
    }
}

/// One render of the live section: the event's kind and its data, with
/// the follower's placeholder where the CSRF token goes.
#[derive(Clone)]
struct Rendered {
    /// `update`, or `problem` when Consul refused a read.
    kind: &'static str,
    /// The section (or the problem's text).
    data: Arc<str>,
}

/// The watches and the render of one (service, reader), shared by its
/// streams; stops them all when the last stream drops it.
struct Follower {
    /// The latest render (`None` until the first).
    latest: watch::Receiver<Option<Rendered>>,
    /// What stands for the CSRF token in the renders.
    placeholder: String,
    /// Stops the watches and the render.
    _stop: DropGuard,
}

impl Follower {
    /// Starts following `service` as `c` sees it, until dropped or `stop`
    /// fires (the console shuts down).
    fn start(
        c: Caller,
        prefix: &str,
        service: String,
        wait: Duration,
        stop: &CancellationToken,
    ) -> Follower {
        let config = WatchConfig {
            wait,
            ..WatchConfig::default()
        };
        let client = c.store.client().clone();
        let base = format!("{prefix}/services/{service}");
        // A change is a signal; a signal waiting to be rendered absorbs
        // the next ones (the render reads everything afresh).
        let (tx, mut changes) = mpsc::channel::<()>(1);
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
        let placeholder =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let (publish, latest) = watch::channel(None::<Rendered>);
        let (render_stop, csrf) = (watches.clone(), placeholder.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = render_stop.cancelled() => return,
                    signal = changes.recv() => if signal.is_none() { return },
                }
                let rendered = tokio::select! {
                    _ = render_stop.cancelled() => return,
                    r = super::live_html(&c, &service, &csrf) => r,
                };
                let (kind, data) = match rendered {
                    Ok(html) => ("update", html),
                    Err(e) => ("problem", e.to_string()),
                };
                // Consul answers a change that this page does not show (a
                // check's output it already had, say): nothing to send.
                publish.send_if_modified(|last| {
                    if last
                        .as_ref()
                        .is_some_and(|l| l.kind == kind && *l.data == *data)
                    {
                        return false;
                    }
                    *last = Some(Rendered {
                        kind,
                        data: data.into(),
                    });
                    true
                });
            }
        });
        Follower {
            latest,
            placeholder,
            _stop: watches.drop_guard(),
        }
    }
}

/// The stream of `update` events of `follower`, with `csrf` in its forms,
/// until the client leaves or `stop` fires (the console shuts down). The
/// first event is the section as it is now.
fn updates(
    follower: Arc<Follower>,
    csrf: String,
    stop: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + use<> {
    let mut latest = follower.latest.clone();
    latest.mark_changed();
    let start = Sending {
        follower,
        latest,
        csrf,
        last: None,
        stop,
    };
    futures::stream::unfold(start, |mut f| async move {
        loop {
            tokio::select! {
                _ = f.stop.cancelled() => return None,
                changed = f.latest.changed() => changed.ok()?,
            }
            let Some(r) = f.latest.borrow_and_update().clone() else {
                continue;
            };
            // What this stream sent last (the section went on and came
            // back while the stream was behind): nothing new.
            if f.last.as_deref() == Some(&*r.data) {
                continue;
            }
            let data = r.data.replace(&f.follower.placeholder, &f.csrf);
            let event = Event::default().event(r.kind).data(data);
            f.last = Some(r.data);
            return Some((Ok(event), f));
        }
    })
}

/// What a stream sends from.
struct Sending {
    /// The follower (held: the last stream's drop stops it).
    follower: Arc<Follower>,
    /// Its renders.
    latest: watch::Receiver<Option<Rendered>>,
    /// The session's CSRF token, for the forms of the section.
    csrf: String,
    /// The render last sent.
    last: Option<Arc<str>>,
    /// The console's shutdown.
    stop: CancellationToken,
}

/// Runs `watch` in a task that signals every change on `changed`, until
/// `stop` fires (the follower was dropped: its guard cancels it) or nobody
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

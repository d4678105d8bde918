//! The console's HTTP server: the listener (plain on loopback, rustls
//! elsewhere), the router, graceful shutdown.
//!
//! Routes are added through [`Routes`], which remembers each (method,
//! path) it registers: `docs/openapi.yaml` is checked against that list
//! (`tests/console_openapi.rs`), and a page or an event stream is one more
//! call in [`router`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::api;
use super::config::HttpConfig;
use super::error::ApiError;
use super::metrics::Metrics;
use super::page;
use super::page::session::Sessions;
use crate::consul::Client;
use crate::coordinator::config::ServiceConfig;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The coordinator's Consul client: its address and limits for every
    /// caller's client, and its own token for `/metrics` (no caller).
    pub client: Client,
    /// `consul.kv_prefix`.
    pub prefix: String,
    /// `[[services]]`: the services the API knows.
    pub services: Vec<ServiceConfig>,
    /// The configured receivers' names, for the outbox's per-receiver view.
    pub receivers: Vec<String>,
    /// This replica's name (the leader lock's holder when it leads).
    pub replica: String,
    /// The process's metrics.
    pub metrics: &'static Metrics,
    /// The web page's login sessions (this replica's own).
    pub sessions: Sessions,
    /// `consul.max_wait`: the `wait` of the page's blocking queries.
    pub max_wait: Duration,
    /// Fires when the console shuts down: ends the page's event streams
    /// (which would otherwise hold the graceful shutdown open).
    pub cancel: CancellationToken,
    /// The page's live followers, shared by the event streams of one
    /// (service, reader) (`page::live`).
    pub live: page::live::Followers,
}

/// Shared state of the handlers.
pub type Shared = Arc<AppState>;

/// A router that remembers what it routes.
#[derive(Debug)]
pub struct Routes {
    router: Router<Shared>,
    list: Vec<(Method, &'static str)>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            list: Vec::new(),
        }
    }

    fn add(mut self, method: Method, path: &'static str, route: MethodRouter<Shared>) -> Self {
        self.list.push((method, path));
        self.router = self.router.route(path, route);
        self
    }

    /// A route of the web page (HTML, forms, its assets and event
    /// streams): served, but not part of the API's OpenAPI document.
    fn page(mut self, path: &'static str, route: MethodRouter<Shared>) -> Self {
        self.router = self.router.route(path, route);
        self
    }
}

/// Every route of the console: the API under `/v1/`, its OpenAPI document,
/// `/metrics`, and the web page (HTML, its assets and event streams).
pub fn routes() -> Routes {
    Routes::new()
        .add(Method::GET, "/v1/openapi.yaml", get(api::openapi))
        .add(Method::GET, "/v1/whoami", get(api::whoami))
        .add(Method::GET, "/v1/services", get(api::services))
        .add(Method::GET, "/v1/services/{service}", get(api::service))
        .add(Method::GET, "/v1/services/{service}/plans", get(api::plans))
        .add(
            Method::GET,
            "/v1/services/{service}/decisions",
            get(api::decisions),
        )
        .add(
            Method::GET,
            "/v1/services/{service}/rollout",
            get(api::rollout),
        )
        .add(
            Method::GET,
            "/v1/services/{service}/history",
            get(api::history),
        )
        .add(
            Method::POST,
            "/v1/services/{service}/pause",
            api::command(api::Command::Pause),
        )
        .add(
            Method::POST,
            "/v1/services/{service}/resume",
            api::command(api::Command::Resume),
        )
        .add(
            Method::POST,
            "/v1/services/{service}/abort",
            api::command(api::Command::Abort),
        )
        .add(
            Method::POST,
            "/v1/services/{service}/promote",
            api::command(api::Command::Promote),
        )
        .add(Method::GET, "/v1/plans/{plan}", get(api::plan))
        .add(Method::POST, "/v1/plans/{plan}/approve", post(api::approve))
        .add(Method::POST, "/v1/plans/{plan}/reject", post(api::reject))
        .add(Method::GET, "/v1/outbox", get(api::outbox))
        .add(Method::GET, "/metrics", get(api::metrics))
        // The web page.
        .page("/", get(page::index))
        .page("/login", get(page::login_form).post(page::login))
        .page("/logout", post(page::logout))
        .page("/assets/console.css", get(page::css))
        .page("/assets/console.js", get(page::js))
        .page("/outbox", get(page::outbox))
        .page("/services/{service}", get(page::service))
        .page("/services/{service}/events", get(page::live::events))
        .page(
            "/services/{service}/pause",
            page::command(api::Command::Pause),
        )
        .page(
            "/services/{service}/resume",
            page::command(api::Command::Resume),
        )
        .page(
            "/services/{service}/abort",
            page::command(api::Command::Abort),
        )
        .page(
            "/services/{service}/promote",
            page::command(api::Command::Promote),
        )
        .page("/plans/{plan}", get(page::plan))
        .page("/plans/{plan}/approve", page::decide(false))
        .page("/plans/{plan}/reject", page::decide(true))
        .add(
            Method::GET,
            "/services/{service}/timeline.svg",
            get(super::timeline::timeline),
        )
}

/// The (method, path) of every documented route, as axum spells paths
/// (`/v1/plans/{plan}`): what `docs/openapi.yaml` describes. The page's
/// HTML routes ([`Routes::page`]) are not in it.
pub fn route_list() -> Vec<(Method, &'static str)> {
    routes().list
}

/// The router with its state and JSON answers for unknown paths and
/// methods.
pub fn router(state: Shared) -> Router {
    routes()
        .router
        .fallback(|| async { ApiError::NotFound("no such path; see /v1/openapi.yaml".into()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(serde_json::json!({
                    "error": "this path does not take that method; see /v1/openapi.yaml"
                })),
            )
                .into_response()
        })
        .with_state(state)
}

/// The console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `http.listen` could not be bound.
    #[error("http.listen = {listen:?}: cannot listen: {source}")]
    Bind {
        /// The address.
        listen: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key could not be used.
    #[error("{key} = {path:?}: {reason}")]
    Tls {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// `http.listen` is not an address (validation catches it first).
    #[error("http.listen = {0:?}: not IP:PORT")]
    Address(String),
}

/// A running console.
#[derive(Debug)]
pub struct Running {
    /// The bound address (the real port when `listen` said 0).
    pub addr: SocketAddr,
    /// Whether it speaks TLS.
    pub tls: bool,
    /// The server, then the tasks serving beside it (the metrics' watch):
    /// each ends when the cancel token fires, and is awaited.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Adds a task that ends with the server's cancel token.
    pub(crate) fn beside(&mut self, task: tokio::task::JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// Waits for the server and its tasks to finish (after the cancel
    /// token fired).
    pub async fn stopped(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds `config.listen` and serves `router` until `cancel` fires.
pub async fn serve(
    config: &HttpConfig,
    router: Router,
    cancel: CancellationToken,
) -> Result<Running, ServerError> {
    let addr = config
        .listen_addr()
        .map_err(|_| ServerError::Address(config.listen.clone()))?;
    let acceptor = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            listen: config.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        listen: config.listen.clone(),
        source,
    })?;
    let tls = acceptor.is_some();
    let stop = cancel.clone();
    let task = match acceptor {
        None => tokio::spawn(async move {
            let r = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "Console server stopped with an error.");
            }
        }),
        Some(acceptor) => {
            let listener = TlsListener::start(listener, acceptor, cancel.clone());
            tokio::spawn(async move {
                let r = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "Console server stopped with an error.");
                }
            })
        }
    };
    Ok(Running {
        addr,
        tls,
        tasks: vec![task],
    })
}

/// A rustls acceptor from the PEM files.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |key: &'static str, path: &std::path::Path, reason: String| ServerError::Tls {
        key,
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err("http.tls_cert_file", cert, format!("cannot read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            err(
                "http.tls_cert_file",
                cert,
                format!("not PEM certificates: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(err(
            "http.tls_cert_file",
            cert,
            "holds no certificate".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        err(
            "http.tls_key_file",
            key,
            format!("not a PEM private key: {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("http.tls_cert_file", cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| {
            err(
                "http.tls_key_file",
                key,
                format!("does not fit the certificate: {e}"),
            )
        })?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TCP connections and completes TLS handshakes in their own
/// tasks, so one slow client never holds up another's handshake.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

/// A handshake that takes longer is dropped.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

impl TlsListener {
    fn start(listener: TcpListener, acceptor: TlsAcceptor, cancel: CancellationToken) -> Self {
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(error = %e, "Console accept failed.");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "Console TLS handshake failed.")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "Console TLS handshake timed out."),
                    }
                });
            }
        });
        Self { ready, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor stopped (shutdown): never answer again; the
            // graceful shutdown ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

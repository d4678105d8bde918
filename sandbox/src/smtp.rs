//! A real SMTP server on loopback that keeps what it receives, for tests and
//! the demo: `EHLO`/`HELO`, `STARTTLS` (a CA and a certificate for
//! `localhost` and `127.0.0.1`, made at start; the CA's PEM is handed to
//! clients), `AUTH PLAIN` and `AUTH LOGIN`, `MAIL`, `RCPT`, `DATA` (with
//! dot-unstuffing), `RSET`, `NOOP`, `QUIT`.
//!
//! Switches make it misbehave like a real server would: refuse a recipient
//! (`550 5.1.1`), refuse every login (`535 5.7.8`), require a login
//! (`530 5.7.0`), or keep a message and then stall before answering the
//! final `250` ([`SmtpHandle::stall_after_data`]: the moment between a
//! server's acceptance and the sender learning of it). It never relays
//! anything anywhere: messages stay in memory, readable with
//! [`SmtpHandle::messages`], every copy as received; [`SmtpHandle::mailbox`]
//! shows them as a mail system that drops a copy of a `Message-ID` it
//! already delivered would.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How to start the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Offer STARTTLS.
    pub starttls: bool,
    /// Accepted login (user, password); any login is accepted when `None`.
    pub credentials: Option<(String, String)>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            starttls: false,
            credentials: None,
        }
    }
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// `MAIL FROM` address.
    pub from: String,
    /// `RCPT TO` addresses accepted.
    pub to: Vec<String>,
    /// The message as sent (headers and body, dot-unstuffed).
    pub data: String,
    /// The user that logged in, if any.
    pub login: Option<String>,
    /// Whether the session was encrypted (STARTTLS).
    pub tls: bool,
}

impl Received {
    /// The first header called `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push(' ');
                    v.push_str(line.trim());
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    value = Some(v.trim().to_string());
                }
            }
        }
        value
    }

    /// The `Subject` header.
    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    /// The `Message-ID` header, as sent (with its angle brackets).
    pub fn message_id(&self) -> Option<String> {
        self.header("Message-ID")
    }
}

/// Switches and received messages, shared with the sessions.
#[derive(Debug, Default)]
struct Shared {
    messages: Vec<Received>,
    rejected_recipients: BTreeSet<String>,
    reject_logins: bool,
    require_login: bool,
    /// Keep the next messages, but do not answer their final `250` while
    /// set.
    stall_after_data: bool,
}

/// Entry point: see [`SmtpServer::start`].
#[derive(Debug)]
pub struct SmtpServer;

/// A running server.
#[derive(Debug)]
pub struct SmtpHandle {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    ca_pem: Option<String>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate could not be made.
    #[error("cannot make the TLS certificate: {0}")]
    Tls(String),
}

impl SmtpServer {
    /// Binds and starts serving.
    pub async fn start(config: Config) -> Result<SmtpHandle, Error> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let (acceptor, ca_pem) = if config.starttls {
            let (a, pem) = tls_acceptor().map_err(Error::Tls)?;
            (Some(a), Some(pem))
        } else {
            (None, None)
        };
        let shared = Arc::new(Mutex::new(Shared::default()));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let ctx = Arc::new(Ctx {
            shared: shared.clone(),
            acceptor,
            credentials: config.credentials,
        });
        let (c, t) = (cancel.clone(), tracker.clone());
        tracker.spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = c.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok(s) => s,
                        Err(_) => continue,
                    },
                };
                let (ctx, c2) = (ctx.clone(), c.clone());
                t.spawn(async move {
                    tokio::select! {
                        _ = c2.cancelled() => {}
                        _ = session(stream, ctx) => {}
                    }
                });
            }
        });
        Ok(SmtpHandle {
            addr,
            shared,
            ca_pem,
            cancel,
            tracker,
        })
    }
}

impl SmtpHandle {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the STARTTLS certificate (when offered).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.shared).messages.clone()
    }

    /// Waits until at least `n` messages arrived or `timeout` passed;
    /// answers what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n || tokio::time::Instant::now() >= until {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `Message-ID` of every copy received, in order (`None` for a
    /// message without one).
    pub fn message_ids(&self) -> Vec<Option<String>> {
        lock(&self.shared)
            .messages
            .iter()
            .map(Received::message_id)
            .collect()
    }

    /// How many copies of the message `id` (with its angle brackets) were
    /// received.
    pub fn copies(&self, id: &str) -> usize {
        lock(&self.shared)
            .messages
            .iter()
            .filter(|m| m.message_id().as_deref() == Some(id))
            .count()
    }

    /// The messages as a mailbox with duplicate suppression shows them: the
    /// first copy of each `Message-ID` (messages without one are all kept).
    pub fn mailbox(&self) -> Vec<Received> {
        let mut seen = BTreeSet::new();
        self.messages()
            .into_iter()
            .filter(|m| m.message_id().is_none_or(|id| seen.insert(id)))
            .collect()
    }

    /// While `stall` holds, a message is kept when its data ends, but the
    /// final `250` is not answered (the sender waits as for a slow server);
    /// clearing it answers the waiting sessions.
    pub fn stall_after_data(&self, stall: bool) {
        lock(&self.shared).stall_after_data = stall;
    }

    /// Refuses `RCPT TO` for `address` from now on (`550 5.1.1`).
    pub fn reject_recipient(&self, address: &str) {
        lock(&self.shared)
            .rejected_recipients
            .insert(address.to_ascii_lowercase());
    }

    /// Accepts every recipient again.
    pub fn accept_all_recipients(&self) {
        lock(&self.shared).rejected_recipients.clear();
    }

    /// Refuses (`true`) or accepts every login.
    pub fn reject_logins(&self, reject: bool) {
        lock(&self.shared).reject_logins = reject;
    }

    /// Requires a login before `MAIL FROM` (`530 5.7.0`).
    pub fn require_login(&self, require: bool) {
        lock(&self.shared).require_login = require;
    }

    /// Stops accepting, closes every session and waits for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

struct Ctx {
    shared: Arc<Mutex<Shared>>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    credentials: Option<(String, String)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A CA and a certificate for localhost/127.0.0.1 signed by it.
fn tls_acceptor() -> Result<(tokio_rustls::TlsAcceptor, String), String> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let e = |e: rcgen::Error| e.to_string();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rollgate sandbox SMTP CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(e)?).map_err(e)?;
    let leaf_key = KeyPair::generate().map_err(e)?;
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(e)?
        .signed_by(&leaf_key, &ca)
        .map_err(e)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .map_err(|e| e.to_string())?;
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.pem()))
}

/// What a conversation ended with.
enum End {
    Closed,
    StartTls,
}

async fn session(stream: TcpStream, ctx: Arc<Ctx>) {
    let mut plain = BufStream::new(stream);
    let mut login = None;
    if reply(&mut plain, "220 sandbox ESMTP rollgate test server")
        .await
        .is_err()
    {
        return;
    }
    match conversation(&mut plain, &ctx, false, &mut login).await {
        Ok(End::StartTls) => {}
        _ => return,
    }
    let Some(acceptor) = ctx.acceptor.clone() else {
        return;
    };
    let Ok(tls) = acceptor.accept(plain.into_inner()).await else {
        return;
    };
    let mut tls = BufStream::new(tls);
    let _ = conversation(&mut tls, &ctx, true, &mut login).await;
}

async fn reply<S: AsyncWrite + Unpin>(s: &mut S, line: &str) -> std::io::Result<()> {
    s.write_all(line.as_bytes()).await?;
    s.write_all(b"\r\n").await?;
    s.flush().await
}

async fn read_line<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufStream<S>,
) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    if s.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

fn address(arg: &str) -> String {
    let a = arg.trim();
    let inner = match (a.find('<'), a.find('>')) {
        (Some(s), Some(e)) if e > s => &a[s + 1..e],
        _ => a.split_whitespace().next().unwrap_or(""),
    };
    inner.to_string()
}

fn b64(s: &str) -> Option<String> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

async fn conversation<S>(
    s: &mut BufStream<S>,
    ctx: &Ctx,
    tls: bool,
    login: &mut Option<String>,
) -> std::io::Result<End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    loop {
        let Some(line) = read_line(s).await? else {
            return Ok(End::Closed);
        };
        let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                let mut lines = vec![
                    "250-sandbox".to_string(),
                    "250-8BITMIME".into(),
                    "250-SIZE 10485760".into(),
                ];
                if ctx.acceptor.is_some() && !tls {
                    lines.push("250-STARTTLS".into());
                }
                lines.push("250-AUTH PLAIN LOGIN".into());
                lines.push("250 HELP".into());
                reply(s, &lines.join("\r\n")).await?;
            }
            "HELO" => reply(s, "250 sandbox").await?,
            "STARTTLS" if ctx.acceptor.is_some() && !tls => {
                reply(s, "220 2.0.0 Ready to start TLS").await?;
                return Ok(End::StartTls);
            }
            "AUTH" => {
                let (mech, initial) = arg.split_once(' ').unwrap_or((arg, ""));
                let creds = match mech.to_ascii_uppercase().as_str() {
                    "PLAIN" => {
                        let data = if initial.is_empty() {
                            reply(s, "334 ").await?;
                            read_line(s).await?.unwrap_or_default()
                        } else {
                            initial.to_string()
                        };
                        b64(&data).and_then(|d| {
                            let mut parts = d.split('\0').skip(1);
                            Some((parts.next()?.to_string(), parts.next()?.to_string()))
                        })
                    }
                    "LOGIN" => {
                        reply(s, "334 VXNlcm5hbWU6").await?;
                        let user = b64(&read_line(s).await?.unwrap_or_default());
                        reply(s, "334 UGFzc3dvcmQ6").await?;
                        let pass = b64(&read_line(s).await?.unwrap_or_default());
                        user.zip(pass)
                    }
                    _ => {
                        reply(s, "504 5.5.4 Unrecognized authentication type").await?;
                        continue;
                    }
                };
                let refused = lock(&ctx.shared).reject_logins;
                let ok = !refused
                    && creds.as_ref().is_some_and(|(u, p)| {
                        ctx.credentials
                            .as_ref()
                            .is_none_or(|(cu, cp)| cu == u && cp == p)
                    });
                if ok {
                    *login = creds.map(|(u, _)| u);
                    reply(s, "235 2.7.0 Authentication successful").await?;
                } else {
                    reply(s, "535 5.7.8 Error: authentication failed: Authentication credentials invalid").await?;
                }
            }
            "MAIL" => {
                if lock(&ctx.shared).require_login && login.is_none() {
                    reply(s, "530 5.7.0 Authentication required").await?;
                    continue;
                }
                from = Some(address(
                    arg.trim_start_matches(|c: char| c != ':')
                        .trim_start_matches(':'),
                ));
                to.clear();
                reply(s, "250 2.1.0 Ok").await?;
            }
            "RCPT" => {
                let rcpt = address(
                    arg.trim_start_matches(|c: char| c != ':')
                        .trim_start_matches(':'),
                );
                if from.is_none() {
                    reply(s, "503 5.5.1 Error: need MAIL command").await?;
                } else if lock(&ctx.shared)
                    .rejected_recipients
                    .contains(&rcpt.to_ascii_lowercase())
                {
                    reply(s, &format!("550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in local recipient table")).await?;
                } else {
                    to.push(rcpt);
                    reply(s, "250 2.1.5 Ok").await?;
                }
            }
            "DATA" => {
                if to.is_empty() {
                    reply(s, "554 5.5.1 Error: no valid recipients").await?;
                    continue;
                }
                reply(s, "354 End data with <CR><LF>.<CR><LF>").await?;
                let mut data = String::new();
                loop {
                    let Some(l) = read_line(s).await? else {
                        return Ok(End::Closed);
                    };
                    if l == "." {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(&l));
                    data.push_str("\r\n");
                }
                lock(&ctx.shared).messages.push(Received {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                    login: login.clone(),
                    tls,
                });
                while lock(&ctx.shared).stall_after_data {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                reply(s, "250 2.0.0 Ok: queued").await?;
            }
            "RSET" => {
                from = None;
                to.clear();
                reply(s, "250 2.0.0 Ok").await?;
            }
            "NOOP" => reply(s, "250 2.0.0 Ok").await?,
            "QUIT" => {
                reply(s, "221 2.0.0 Bye").await?;
                return Ok(End::Closed);
            }
            _ => reply(s, "502 5.5.2 Error: command not recognized").await?,
        }
    }
}

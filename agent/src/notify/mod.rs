//! Notifications: health alerts and rollout events, to Slack and by email,
//! through a durable outbox.
//!
//! - [`event`]: the [`Event`] model (health, rollout, meta) with dedup keys;
//! - [`route`]: which receivers an event goes to (pure);
//! - [`render`]: subject, text and HTML of an event (pure); [`blocks`]: its
//!   Slack Block Kit layout (pure); [`links`]: the console page a message
//!   links to, when `[http] public_url` is set (pure);
//! - the [`Notifier`] trait and its implementations: [`slack`] (Web API
//!   through slack-morphism), [`webhook`] (Slack incoming webhooks),
//!   [`email`] (SMTP through lettre);
//! - [`outbox`]: the durable outbox in Consul KV, one entry per dedup key,
//!   and the pure rules of delivery, retry and fallback; [`sender`]: the
//!   loop that delivers it.
//!
//! Callers enqueue ([`Outbox::enqueue`]) and never send directly; only the
//! sender talks to Slack and SMTP servers. Nothing here logs a secret: tokens,
//! webhook URLs and passwords stay inside [`crate::config::Secret`]s and the
//! clients built from them.

pub mod blocks;
pub mod config;
pub mod email;
pub mod event;
pub mod links;
pub mod outbox;
pub mod render;
pub mod route;
pub mod sender;
pub mod slack;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use self::event::{
    AlertStatus, CheckInfo, Event, EventBody, HealthNotice, MetaKind, MetaNotice, RolloutNotice,
    RolloutStage, Severity, UnixMillis, now_ms,
};
pub use self::links::{Link, Links};
pub use self::outbox::{Enqueued, Outbox, OutboxError};
pub use self::sender::Sender;

use self::config::{NotifyConfig, ReceiverConfig};

/// Where a notice stands in its story (an alert group's notices, one
/// rollout's events) for one receiver, and how it is identified: what a
/// notifier needs to thread it and to make a resend recognisable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Thread {
    /// The notice's stable identity: its outbox key. The same on every
    /// attempt and on every leader (an email's `Message-ID` is made of it).
    pub notice: String,
    /// The story's first message as this receiver got it (a Slack message
    /// as `channel/ts`, an email's `Message-ID`); `None`: this notice
    /// starts the thread.
    pub root: Option<String>,
    /// The story's previous message to this receiver (email `In-Reply-To`).
    pub previous: Option<String>,
    /// An earlier attempt was in flight when its sender stopped: it may have
    /// arrived. A notifier that can tell or repair it does (Slack updates
    /// the first message instead of posting the reply again); email sends
    /// again with the same `Message-ID`.
    pub maybe_sent: bool,
}

impl Thread {
    /// A notice on its own: no story, identified by the event's key.
    pub fn single(event: &Event) -> Self {
        Self {
            notice: event.key.clone(),
            ..Self::default()
        }
    }
}

/// What a notifier reports of a delivery, for the follow-ups' threading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// This message as the receiver knows it (`channel/ts`, `Message-ID`);
    /// `None` when the receiver gives nothing back (webhooks) or nothing
    /// new was posted.
    pub reference: Option<String>,
    /// The story's first message, for the next notice (this message when
    /// it starts the thread).
    pub root: Option<String>,
}

/// A channel that can deliver an event: one Slack channel, one webhook, one
/// list of email recipients.
///
/// `send` either delivered the event or says why not and whether retrying
/// can help; it never retries on its own (the outbox does).
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// The receiver's name (from configuration).
    fn name(&self) -> &str;
    /// `slack`, `webhook` or `email`.
    fn channel(&self) -> &'static str;
    /// Delivers one event, threaded as `thread` says, with a link to its
    /// console page when `links` makes one.
    fn send<'a>(
        &'a self,
        event: &'a Event,
        thread: &'a Thread,
        links: &'a Links,
    ) -> BoxFuture<'a, Result<Sent, NotifyError>>;
}

/// A delivery failed. Every variant names the receiver and says whether
/// retrying can help ([`NotifyError::retryable`]).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Slack answered `ok: false` (`invalid_auth`, `channel_not_found`, …).
    #[error("receiver {receiver}: Slack refused {method}: {code} ({hint})")]
    SlackApi {
        /// Receiver name.
        receiver: String,
        /// Slack method (`chat.postMessage`).
        method: &'static str,
        /// Slack's error code.
        code: String,
        /// What it means and what to do.
        hint: &'static str,
    },
    /// HTTP 429: Slack asks to slow down.
    #[error("receiver {receiver}: rate limited by Slack (retry after {}); retrying later", retry_after.map(|d| humantime::format_duration(d).to_string()).unwrap_or_else(|| "an unspecified time".into()))]
    RateLimited {
        /// Receiver name.
        receiver: String,
        /// Slack's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Any other unexpected HTTP status.
    #[error("receiver {receiver}: {service} answered HTTP {status}: {body}{}", if *status >= 500 { "; retrying later" } else { "; retrying will not help until the configuration is fixed" })]
    Http {
        /// Receiver name.
        receiver: String,
        /// `Slack API`, `Slack webhook`.
        service: &'static str,
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("receiver {receiver}: cannot reach {service}: {message}; retrying later")]
    Unreachable {
        /// Receiver name.
        receiver: String,
        /// `Slack API`, `Slack webhook`, `SMTP server smtp.example.com:587`.
        service: String,
        /// The transport error.
        message: String,
    },
    /// The SMTP server refused the login, a recipient, the sender or the
    /// message.
    #[error("receiver {receiver}: the SMTP server refused {what}: {message}{}", if *permanent { "; retrying will not help until this is fixed" } else { "; retrying later" })]
    SmtpRejected {
        /// Receiver name.
        receiver: String,
        /// `the login`, `a recipient`, `the message`.
        what: &'static str,
        /// A 5xx answer (fix first) rather than a 4xx (try again).
        permanent: bool,
        /// The server's reply.
        message: String,
    },
    /// No answer within `send_timeout`.
    #[error("receiver {receiver}: no answer within {}; retrying later", humantime::format_duration(*after))]
    Timeout {
        /// Receiver name.
        receiver: String,
        /// The limit.
        after: Duration,
    },
    /// The receiver cannot be built or used as configured.
    #[error("receiver {receiver}: {message}")]
    Config {
        /// Receiver name.
        receiver: String,
        /// What is wrong.
        message: String,
    },
    /// An outbox entry names a receiver the configuration no longer has.
    #[error("receiver {receiver} is not configured; the event stays in the outbox")]
    UnknownReceiver {
        /// Receiver name.
        receiver: String,
    },
}

impl NotifyError {
    /// Whether the same delivery may succeed later without a change of
    /// configuration.
    pub fn retryable(&self) -> bool {
        match self {
            NotifyError::RateLimited { .. }
            | NotifyError::Unreachable { .. }
            | NotifyError::Timeout { .. } => true,
            NotifyError::Http { status, .. } => *status >= 500 || *status == 429,
            NotifyError::SmtpRejected { permanent, .. } => !permanent,
            NotifyError::SlackApi { code, .. } => slack::retryable_code(code),
            NotifyError::Config { .. } | NotifyError::UnknownReceiver { .. } => false,
        }
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            NotifyError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The configured receivers by name, with their fallbacks.
#[derive(Debug, Clone, Default)]
pub struct Receivers {
    by_name: BTreeMap<String, Arc<dyn Notifier>>,
    fallback: BTreeMap<String, String>,
    /// The console's pages, linked from messages (`[http] public_url`).
    links: Links,
}

impl Receivers {
    /// No receivers (add them with [`Receivers::insert`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds every receiver of `[notify]`, reading secrets from values,
    /// files or the process environment.
    pub fn from_config(config: &NotifyConfig) -> Result<Self, NotifyError> {
        Self::from_config_with_env(config, &|name| std::env::var(name).ok())
    }

    /// As [`Receivers::from_config`], with the environment given.
    pub fn from_config_with_env(
        config: &NotifyConfig,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, NotifyError> {
        let mut out = Self::new();
        for r in &config.receivers {
            out.insert(build(r, getenv)?, r.fallback.clone());
        }
        Ok(out)
    }

    /// The same receivers, their messages linking to the console's pages
    /// under `links` (`[http] public_url`).
    pub fn with_links(mut self, links: Links) -> Self {
        self.links = links;
        self
    }

    /// Adds a notifier under its name, with an optional fallback receiver.
    pub fn insert(&mut self, notifier: Arc<dyn Notifier>, fallback: Option<String>) {
        let name = notifier.name().to_string();
        match fallback {
            Some(f) => {
                self.fallback.insert(name.clone(), f);
            }
            None => {
                self.fallback.remove(&name);
            }
        }
        self.by_name.insert(name, notifier);
    }

    /// The notifier called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Notifier>> {
        self.by_name.get(name).cloned()
    }

    /// The fallback receiver of `name`.
    pub fn fallback_of(&self, name: &str) -> Option<&str> {
        self.fallback.get(name).map(String::as_str)
    }

    /// Delivers `event` on its own (no thread) to `receiver` within
    /// `timeout`.
    pub async fn send(
        &self,
        receiver: &str,
        event: &Event,
        timeout: Duration,
    ) -> Result<(), NotifyError> {
        self.deliver(receiver, event, &Thread::single(event), timeout)
            .await
            .map(|_| ())
    }

    /// Delivers `event` to `receiver` within `timeout`, threaded as `thread`
    /// says.
    pub async fn deliver(
        &self,
        receiver: &str,
        event: &Event,
        thread: &Thread,
        timeout: Duration,
    ) -> Result<Sent, NotifyError> {
        let Some(n) = self.get(receiver) else {
            return Err(NotifyError::UnknownReceiver {
                receiver: receiver.into(),
            });
        };
        match tokio::time::timeout(timeout, n.send(event, thread, &self.links)).await {
            Ok(r) => r,
            Err(_) => Err(NotifyError::Timeout {
                receiver: receiver.into(),
                after: timeout,
            }),
        }
    }
}

fn build(
    r: &ReceiverConfig,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Notifier>, NotifyError> {
    let config_error = |message: String| NotifyError::Config {
        receiver: r.name.clone(),
        message,
    };
    if let Some(s) = &r.slack {
        return Ok(Arc::new(slack::SlackNotifier::new(&r.name, s, getenv)?));
    }
    if let Some(w) = &r.webhook {
        return Ok(Arc::new(webhook::WebhookNotifier::new(&r.name, w, getenv)?));
    }
    if let Some(e) = &r.email {
        return Ok(Arc::new(email::EmailNotifier::new(&r.name, e, getenv)?));
    }
    Err(config_error(
        "set exactly one of slack, webhook, email".into(),
    ))
}

//! The `[notify]` section: receivers (Slack, incoming webhook, email), the
//! routes that pick them, and how the outbox retries and falls back.
//!
//! Secrets (Slack token, webhook URL, SMTP password) come from the value
//! itself (a [`Secret`]), a `*_file`, or a `*_env` variable name; they are
//! resolved when the notifiers are built and never printed.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Problems, Secret};

/// How alerts and rollout events reach people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Receivers used for an event no route matches; empty drops such
    /// events with a warning.
    pub default_receivers: Vec<String>,
    /// When a receiver has failed this long for one event, the event also
    /// goes to that receiver's `fallback` (once).
    #[serde(with = "humantime_serde")]
    pub fallback_after: Duration,
    /// First retry delay after a failed delivery; doubles per attempt.
    #[serde(with = "humantime_serde")]
    pub retry_min: Duration,
    /// Longest retry delay (also used for failures retrying cannot fix
    /// quickly, such as a revoked token: the event stays in the outbox).
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Time limit of one delivery attempt.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// How long a sender owns a delivery attempt; another sender (a new
    /// leader) retries it only after this passed.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How long delivered entries stay in the outbox, so the same event
    /// enqueued again in that time is recognised and not sent twice.
    #[serde(with = "humantime_serde")]
    pub keep_delivered: Duration,
    /// The receivers, each one channel: `[[notify.receivers]]`.
    pub receivers: Vec<ReceiverConfig>,
    /// Routes, tried in order: `[[notify.routes]]`.
    pub routes: Vec<RouteConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            default_receivers: Vec::new(),
            fallback_after: Duration::from_secs(300),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            send_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(60),
            keep_delivered: Duration::from_secs(24 * 3600),
            receivers: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// One named channel. Exactly one of `slack`, `webhook`, `email` is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// Name routes refer to (`ops-slack`).
    pub name: String,
    /// Another receiver that also gets an event when this one has failed
    /// for `fallback_after` (typically Slack ↔ email).
    pub fallback: Option<String>,
    /// Slack through the Web API (`chat.postMessage` with a bot token).
    pub slack: Option<SlackReceiver>,
    /// Slack through an incoming webhook URL.
    pub webhook: Option<WebhookReceiver>,
    /// Email over SMTP.
    pub email: Option<EmailReceiver>,
}

/// Slack Web API settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SlackReceiver {
    /// Channel ID or name (`C0123456789`, `#ops`); the bot must be a member.
    pub channel: String,
    /// Bot token (`xoxb-…`). Prefer `token_file` or `token_env`.
    pub token: Option<Secret>,
    /// File holding the bot token.
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the bot token.
    pub token_env: Option<String>,
    /// Base URL of the Slack Web API. Must be HTTPS, except a loopback
    /// address with `allow_insecure` (the sandbox's stand-in).
    pub api_url: String,
    /// Allow `http://` to a loopback address (tests and the sandbox only).
    pub allow_insecure: bool,
}

impl Default for SlackReceiver {
    fn default() -> Self {
        Self {
            channel: String::new(),
            token: None,
            token_file: None,
            token_env: None,
            api_url: "https://slack.com/api".into(),
            allow_insecure: false,
        }
    }
}

/// Incoming-webhook settings. The URL is a secret (it is the credential).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookReceiver {
    /// The webhook URL (`https://hooks.slack.com/services/…`).
    pub url: Option<Secret>,
    /// File holding the URL.
    pub url_file: Option<PathBuf>,
    /// Environment variable holding the URL.
    pub url_env: Option<String>,
    /// Allow an `http://` URL to a loopback address (tests only).
    pub allow_insecure: bool,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS at all; needs `allow_insecure = true` (the sandbox only).
    None,
}

/// SMTP settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EmailReceiver {
    /// SMTP server host name (also the name its certificate must carry).
    pub host: String,
    /// Port; 0 means the default for `tls` (587, 465, or 25).
    pub port: u16,
    /// `starttls` (default), `implicit`, or `none`.
    pub tls: TlsMode,
    /// Must be true for `tls = "none"`: plain SMTP sends alerts (and a
    /// password) in clear text.
    pub allow_insecure: bool,
    /// PEM CA that signed the server's certificate, trusted in addition to
    /// the system roots.
    pub ca_file: Option<PathBuf>,
    /// Login name; no login when empty.
    pub username: String,
    /// Password. Prefer `password_file` or `password_env`.
    pub password: Option<Secret>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// Sender address (`rollgate <rollgate@example.com>`).
    pub from: String,
    /// Recipient addresses.
    pub to: Vec<String>,
    /// Time limit of one SMTP conversation step.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for EmailReceiver {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 0,
            tls: TlsMode::Starttls,
            allow_insecure: false,
            ca_file: None,
            username: String::new(),
            password: None,
            password_file: None,
            password_env: None,
            from: String::new(),
            to: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A route: events matching every non-empty condition go to `receivers`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Event kinds: `health`, `rollout`, `meta`; empty matches all.
    pub kinds: Vec<String>,
    /// Service names; empty matches all (node and watcher alerts have none).
    pub services: Vec<String>,
    /// The event's service has at least one of these tags; empty matches all.
    pub tags: Vec<String>,
    /// Lowest severity matched: `info`, `warning`, `critical`.
    pub min_severity: Option<crate::notify::Severity>,
    /// Receiver names.
    pub receivers: Vec<String>,
    /// Keep trying later routes after this one matched (Alertmanager's
    /// `continue`); otherwise the first match wins.
    #[serde(rename = "continue")]
    pub continue_matching: bool,
}

/// Reads a secret from its value, file or environment variable.
pub(crate) fn resolve_secret(
    value: &Option<Secret>,
    file: &Option<PathBuf>,
    env: &Option<String>,
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, String> {
    if let Some(v) = value {
        return Ok(Some(v.clone()));
    }
    if let Some(path) = file {
        return std::fs::read_to_string(path)
            .map(|s| Some(Secret::new(s.trim())))
            .map_err(|e| format!("cannot read {}: {e}", path.display()));
    }
    if let Some(name) = env {
        return match getenv(name) {
            Some(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
            _ => Err(format!("environment variable {name} is not set")),
        };
    }
    Ok(None)
}

fn secret_sources(
    p: &mut Problems,
    key: &str,
    value: &Option<Secret>,
    file: &Option<PathBuf>,
    env: &Option<String>,
    required: bool,
) {
    let set = [value.is_some(), file.is_some(), env.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set > 1 {
        p.push(
            key,
            "",
            format!("set only one of {key}, {key}_file, {key}_env"),
        );
    }
    if set == 0 && required {
        p.push(
            key,
            "",
            format!("required: set {key}, {key}_file or {key}_env"),
        );
    }
    if let Some(f) = file {
        p.readable_file(&format!("{key}_file"), f);
    }
    if let Some(v) = value {
        if v.expose().trim().is_empty() {
            p.push(key, v, "must not be empty");
        }
    }
}

/// Whether `url` is an `http://` URL to a loopback address.
pub(crate) fn is_loopback_http(url: &url::Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        }
}

impl NotifyConfig {
    /// Whether every receiver can be built as a daemon builds them at start
    /// (`Receivers::from_config`: secrets read from their values, files or
    /// variables). Part of `Config::validate_for` for the roles that send.
    pub fn validate_receivers(&self, p: &mut Problems) {
        if let Err(e) = crate::notify::Receivers::from_config(self) {
            p.push("notify.receivers", "", e.to_string());
        }
    }

    /// Checks names, references, URLs, TLS rules and secret sources.
    pub fn validate(&self, p: &mut Problems) {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        p.duration_in(
            "notify.fallback_after",
            self.fallback_after,
            ms(1),
            s(86_400),
        );
        p.duration_in("notify.retry_min", self.retry_min, ms(1), s(3600));
        p.duration_in(
            "notify.retry_max",
            self.retry_max,
            self.retry_min,
            s(86_400),
        );
        p.duration_in("notify.send_timeout", self.send_timeout, ms(100), s(600));
        p.duration_in("notify.lease", self.lease, self.send_timeout, s(3600));
        p.duration_in(
            "notify.keep_delivered",
            self.keep_delivered,
            s(0),
            s(30 * 86_400),
        );
        let names: Vec<&str> = self.receivers.iter().map(|r| r.name.as_str()).collect();
        for (i, r) in self.receivers.iter().enumerate() {
            let k = format!("notify.receivers[{i}]");
            r.validate(&k, &names, p);
            if names.iter().filter(|n| **n == r.name).count() > 1 {
                p.push(
                    &format!("{k}.name"),
                    &r.name,
                    "receiver names must be unique",
                );
            }
        }
        let known = |n: &String| names.contains(&n.as_str());
        for n in self.default_receivers.iter().filter(|n| !known(n)) {
            p.push("notify.default_receivers", n, "no receiver has this name");
        }
        for (i, route) in self.routes.iter().enumerate() {
            let k = format!("notify.routes[{i}]");
            if route.receivers.is_empty() {
                p.push(
                    &format!("{k}.receivers"),
                    "",
                    "a route needs at least one receiver",
                );
            }
            for n in route.receivers.iter().filter(|n| !known(n)) {
                p.push(&format!("{k}.receivers"), n, "no receiver has this name");
            }
            for kind in &route.kinds {
                if !["health", "rollout", "meta"].contains(&kind.as_str()) {
                    p.push(
                        &format!("{k}.kinds"),
                        kind,
                        "must be health, rollout or meta",
                    );
                }
            }
        }
    }
}

impl ReceiverConfig {
    fn validate(&self, k: &str, names: &[&str], p: &mut Problems) {
        let ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
        if !ok {
            p.push(
                &format!("{k}.name"),
                &self.name,
                "must be non-empty letters, digits, '-', '_'",
            );
        }
        if let Some(f) = &self.fallback {
            if f == &self.name || !names.contains(&f.as_str()) {
                p.push(&format!("{k}.fallback"), f, "must name another receiver");
            }
        }
        let set = [
            self.slack.is_some(),
            self.webhook.is_some(),
            self.email.is_some(),
        ];
        if set.iter().filter(|b| **b).count() != 1 {
            p.push(k, &self.name, "set exactly one of slack, webhook, email");
        }
        if let Some(s) = &self.slack {
            let k = format!("{k}.slack");
            if s.channel.trim().is_empty() {
                p.push(&format!("{k}.channel"), "", "required");
            }
            secret_sources(
                p,
                &format!("{k}.token"),
                &s.token,
                &s.token_file,
                &s.token_env,
                true,
            );
            match url::Url::parse(&s.api_url) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) if s.allow_insecure && is_loopback_http(&u) => {}
                Ok(_) => p.push(
                    &format!("{k}.api_url"),
                    &s.api_url,
                    "must be https:// (http:// only to a loopback address with allow_insecure)",
                ),
                Err(e) => p.push(
                    &format!("{k}.api_url"),
                    &s.api_url,
                    format!("not a URL: {e}"),
                ),
            }
        }
        if let Some(w) = &self.webhook {
            let k = format!("{k}.webhook");
            secret_sources(
                p,
                &format!("{k}.url"),
                &w.url,
                &w.url_file,
                &w.url_env,
                true,
            );
            if let Some(u) = &w.url {
                match url::Url::parse(u.expose()) {
                    Ok(u) if u.scheme() == "https" => {}
                    Ok(u) if w.allow_insecure && is_loopback_http(&u) => {}
                    _ => p.push(&format!("{k}.url"), u, "must be an https:// URL"),
                }
            }
        }
        if let Some(e) = &self.email {
            e.validate(&format!("{k}.email"), p);
        }
    }
}

impl EmailReceiver {
    fn validate(&self, k: &str, p: &mut Problems) {
        if self.host.trim().is_empty() {
            p.push(&format!("{k}.host"), "", "required");
        }
        if self.tls == TlsMode::None && !self.allow_insecure {
            p.push(
                &format!("{k}.tls"),
                "none",
                "plain SMTP needs allow_insecure = true (use starttls or implicit)",
            );
        }
        for (key, addr) in
            std::iter::once(("from", &self.from)).chain(self.to.iter().map(|t| ("to", t)))
        {
            if addr.parse::<lettre::message::Mailbox>().is_err() {
                p.push(&format!("{k}.{key}"), addr, "not an email address");
            }
        }
        if self.to.is_empty() {
            p.push(&format!("{k}.to"), "", "at least one recipient is required");
        }
        let needs_password = !self.username.is_empty();
        secret_sources(
            p,
            &format!("{k}.password"),
            &self.password,
            &self.password_file,
            &self.password_env,
            needs_password,
        );
        if let Some(f) = &self.ca_file {
            p.readable_file(&format!("{k}.ca_file"), f);
        }
        p.duration_in(
            &format!("{k}.timeout"),
            self.timeout,
            Duration::from_millis(100),
            Duration::from_secs(600),
        );
    }

    /// The port to connect to.
    pub fn effective_port(&self) -> u16 {
        match (self.port, self.tls) {
            (0, TlsMode::Starttls) => 587,
            (0, TlsMode::Implicit) => 465,
            (0, TlsMode::None) => 25,
            (p, _) => p,
        }
    }
}

//! Slack incoming webhooks: a plain JSON POST (`text` + `blocks`) to the
//! webhook URL, for teams that use webhooks instead of a bot.
//!
//! The URL is the credential: it is kept in a [`Secret`] and never logged;
//! errors name the receiver, not the URL.

use std::time::Duration;

use futures::future::BoxFuture;

use super::config::{WebhookReceiver, is_loopback_http, resolve_secret};
use super::{Event, Links, Notifier, NotifyError, Sent, Thread, blocks};
use crate::config::Secret;

/// A Slack incoming webhook.
pub struct WebhookNotifier {
    /// Receiver name.
    name: String,
    /// The webhook URL; never printed.
    url: Secret,
    /// Connection pool.
    http: reqwest::Client,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("name", &self.name)
            .field("url", &"<redacted>")
            .finish()
    }
}

impl WebhookNotifier {
    /// Resolves the URL and builds the HTTP client.
    pub fn new(
        name: &str,
        config: &WebhookReceiver,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, NotifyError> {
        let err = |message: String| NotifyError::Config {
            receiver: name.into(),
            message,
        };
        let url = resolve_secret(&config.url, &config.url_file, &config.url_env, getenv)
            .map_err(|e| err(format!("webhook url: {e}")))?
            .ok_or_else(|| err("webhook url: set url, url_file or url_env".into()))?;
        let parsed = url::Url::parse(url.expose())
            .map_err(|e| err(format!("webhook url is not a URL: {e}")))?;
        if parsed.scheme() != "https" && !(config.allow_insecure && is_loopback_http(&parsed)) {
            return Err(err("webhook url must be https://".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("rollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| err(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            name: name.into(),
            url,
            http,
        })
    }
}

impl Notifier for WebhookNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn channel(&self) -> &'static str {
        "webhook"
    }

    /// Incoming webhooks answer no `ts`: every notice is its own message
    /// (no thread, nothing to update).
    fn send<'a>(
        &'a self,
        event: &'a Event,
        _thread: &'a Thread,
        links: &'a Links,
    ) -> BoxFuture<'a, Result<Sent, NotifyError>> {
        Box::pin(async move {
            let link = links.of(event);
            let body = serde_json::json!({
                "text": blocks::fallback_text(event, link.as_ref()),
                "blocks": blocks::blocks(event, link.as_ref()),
            });
            let resp = self
                .http
                .post(self.url.expose())
                .json(&body)
                .send()
                .await
                .map_err(|e| NotifyError::Unreachable {
                    receiver: self.name.clone(),
                    service: "Slack webhook".into(),
                    // without_url: the URL is the secret.
                    message: super::slack::error_chain(&e.without_url()),
                })?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = resp.text().await.unwrap_or_default();
            if status.is_success() {
                return Ok(Sent::default());
            }
            if status.as_u16() == 429 {
                return Err(NotifyError::RateLimited {
                    receiver: self.name.clone(),
                    retry_after,
                });
            }
            let code = text.trim();
            if matches!(
                code,
                "invalid_token"
                    | "no_service"
                    | "channel_not_found"
                    | "channel_is_archived"
                    | "action_prohibited"
                    | "no_team"
            ) {
                return Err(NotifyError::SlackApi {
                    receiver: self.name.clone(),
                    method: "incoming webhook",
                    code: code.to_string(),
                    hint: match code {
                        "invalid_token" | "no_service" | "no_team" => {
                            "the webhook URL is wrong or was revoked: fix the receiver's url; retrying will not help"
                        }
                        _ => super::slack::hint(code),
                    },
                });
            }
            Err(NotifyError::Http {
                receiver: self.name.clone(),
                service: "Slack webhook",
                status: status.as_u16(),
                body: super::render::truncate(code, 300),
            })
        })
    }
}

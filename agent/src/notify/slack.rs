//! Slack through the Web API (`chat.postMessage` and `chat.update` with a
//! bot token), using slack-morphism over hyper and rustls.
//!
//! One thread per story: a story's first notice is a message in the
//! channel; each follow-up is posted in its thread (`thread_ts`) and the
//! first message is updated (`chat.update`) to show the current state. A
//! follow-up whose earlier attempt may have arrived (a takeover) is not
//! posted again: the first message is updated with it, which is safe to
//! repeat. Only a story's first message, when its attempt may have arrived,
//! is posted again (a visible duplicate; see the README's delivery section).
//!
//! Production talks HTTPS only. For the sandbox's loopback stand-in
//! (`api_url = "http://127.0.0.1:PORT/api"` with `allow_insecure`), the
//! connector also accepts plain HTTP; configuration validation refuses that
//! for any non-loopback address.
//!
//! Slack's errors become [`NotifyError`]s that name the receiver and say
//! what to do: `invalid_auth` and `channel_not_found` will not fix
//! themselves, `ratelimited` carries Slack's `Retry-After`. The token never
//! appears in a log line or an error.

use std::sync::Arc;

use futures::future::BoxFuture;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use super::config::{SlackReceiver, is_loopback_http, resolve_secret};
use super::{Event, Links, Notifier, NotifyError, Sent, Thread, blocks};

/// A Slack message as the outbox records it: `channel/ts`.
pub fn reference(channel: &str, ts: &str) -> String {
    format!("{channel}/{ts}")
}

/// `(channel, ts)` of a reference made by [`reference`].
pub fn parse_reference(r: &str) -> Option<(&str, &str)> {
    r.rsplit_once('/')
        .filter(|(c, t)| !c.is_empty() && !t.is_empty())
}

/// `chat.update` errors after which the update is given up (the first
/// message was deleted, is too old to edit, or not ours): the reply still
/// goes to the thread.
fn update_gone(e: &NotifyError) -> bool {
    matches!(e, NotifyError::SlackApi { code, .. }
        if matches!(code.as_str(), "message_not_found" | "cant_update_message" | "edit_window_closed"))
}

type Connector = SlackClientHyperConnector<HttpsConnector<HttpConnector>>;

/// A Slack channel reached through the Web API.
pub struct SlackNotifier {
    /// Receiver name.
    name: String,
    /// Channel ID or name.
    channel: String,
    /// Bot token; never printed.
    token: SlackApiToken,
    /// slack-morphism's client (connection pool).
    client: Arc<SlackClient<Connector>>,
    /// Whether messages carry buttons (Approve, Reject, Pause, …): only
    /// when a Slack app answers them (`[coordinator.slack_app]`).
    buttons: bool,
}

impl std::fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackNotifier")
            .field("name", &self.name)
            .field("channel", &self.channel)
            .field("token", &"<redacted>")
            .field("buttons", &self.buttons)
            .finish()
    }
}

/// What a Slack error code means and what to do about it.
pub fn hint(code: &str) -> &'static str {
    match code {
        "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" | "account_inactive" => {
            "the bot token is wrong, expired or revoked: fix the receiver's token; retrying will not help"
        }
        "channel_not_found" => {
            "the channel does not exist or the bot cannot see it: check the receiver's channel; retrying will not help"
        }
        "not_in_channel" => {
            "the bot is not a member of the channel: invite it; retrying will not help"
        }
        "is_archived" => "the channel is archived: choose another; retrying will not help",
        "missing_scope" => "the bot token lacks the chat:write scope; retrying will not help",
        "msg_too_long" | "invalid_blocks" | "invalid_blocks_format" | "no_text" => {
            "Slack rejected the message layout; this is a rollgate bug, please report it"
        }
        "ratelimited" => "rate limited; retrying later",
        c if retryable_code(c) => "Slack had a temporary problem; retrying later",
        _ => "see Slack's chat.postMessage documentation; retrying will probably not help",
    }
}

/// Slack error codes that may succeed when retried.
pub fn retryable_code(code: &str) -> bool {
    matches!(
        code,
        "ratelimited"
            | "fatal_error"
            | "internal_error"
            | "service_unavailable"
            | "request_timeout"
    )
}

/// Maps a slack-morphism error to a [`NotifyError`] naming `receiver`.
pub fn map_error(receiver: &str, method: &'static str, e: SlackClientError) -> NotifyError {
    let receiver = receiver.to_string();
    match e {
        SlackClientError::ApiError(api) => NotifyError::SlackApi {
            receiver,
            method,
            hint: hint(&api.code),
            code: api.code,
        },
        SlackClientError::RateLimitError(rl) => NotifyError::RateLimited {
            receiver,
            retry_after: rl.retry_after,
        },
        SlackClientError::HttpError(h) => NotifyError::Http {
            receiver,
            service: "Slack API",
            status: h.status_code.as_u16(),
            body: render_body(h.http_response_body.as_deref()),
        },
        SlackClientError::HttpProtocolError(p) => NotifyError::Unreachable {
            receiver,
            service: "Slack API".into(),
            message: p
                .cause
                .map(|c| error_chain(c.as_ref()))
                .unwrap_or_else(|| "connection failed".into()),
        },
        SlackClientError::ProtocolError(p) => NotifyError::Unreachable {
            receiver,
            service: "Slack API".into(),
            message: format!("malformed answer: {}", p.json_error),
        },
        other => NotifyError::Unreachable {
            receiver,
            service: "Slack API".into(),
            message: other.to_string(),
        },
    }
}

fn render_body(body: Option<&str>) -> String {
    super::render::truncate(body.unwrap_or(""), 300)
}

/// An error and its sources on one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

impl SlackNotifier {
    /// Builds the client: resolves the token, checks the API URL, builds the
    /// HTTPS (or, for loopback with `allow_insecure`, HTTP) connector.
    pub fn new(
        name: &str,
        config: &SlackReceiver,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, NotifyError> {
        let err = |message: String| NotifyError::Config {
            receiver: name.into(),
            message,
        };
        let token = resolve_secret(&config.token, &config.token_file, &config.token_env, getenv)
            .map_err(|e| err(format!("slack token: {e}")))?
            .ok_or_else(|| err("slack token: set token, token_file or token_env".into()))?;
        let url = url::Url::parse(&config.api_url)
            .map_err(|e| err(format!("slack.api_url {:?}: {e}", config.api_url)))?;
        let insecure = config.allow_insecure && is_loopback_http(&url);
        if url.scheme() != "https" && !insecure {
            return Err(err(format!(
                "slack.api_url {:?} must be https:// (http:// only to loopback with allow_insecure)",
                config.api_url
            )));
        }
        let connector = connector(insecure).map_err(err)?;
        let api_url = config.api_url.trim_end_matches('/').to_string();
        let connector =
            SlackClientHyperConnector::with_connector(connector).with_slack_api_url(&api_url);
        Ok(Self {
            name: name.into(),
            channel: config.channel.clone(),
            token: SlackApiToken::new(SlackApiTokenValue(token.expose().to_string())),
            client: Arc::new(SlackClient::new(connector)),
            buttons: false,
        })
    }

    /// The same notifier, its messages carrying buttons (see
    /// [`blocks::with_buttons`]).
    pub fn with_buttons(mut self) -> Self {
        self.buttons = true;
        self
    }

    /// `blocks` with the event's buttons when this notifier shows them.
    fn maybe_buttons(&self, event: &Event, blocks: Vec<SlackBlock>) -> Vec<SlackBlock> {
        if self.buttons {
            blocks::with_buttons(event, blocks)
        } else {
            blocks
        }
    }

    /// Calls `auth.test`: answers the team and bot user the token belongs to.
    pub async fn verify(&self) -> Result<String, NotifyError> {
        let session = self.client.open_session(&self.token);
        let r = session
            .auth_test()
            .await
            .map_err(|e| map_error(&self.name, "auth.test", e))?;
        Ok(format!(
            "team {:?}, user {:?}",
            r.team,
            r.user.unwrap_or_default()
        ))
    }
}

/// The hyper connector: ring as the crypto provider (set explicitly, so it
/// works whichever providers other crates enable), the system's CA roots,
/// HTTPS only unless `insecure_loopback`.
pub(crate) fn connector(insecure_loopback: bool) -> Result<HttpsConnector<HttpConnector>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    if insecure_loopback {
        // No TLS will be used; an empty root store avoids needing system CAs.
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        return Ok(builder
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build());
    }
    Ok(builder
        .with_provider_and_native_roots(provider)
        .map_err(|e| format!("cannot load the system's CA certificates: {e}"))?
        .https_only()
        .enable_http1()
        .enable_http2()
        .build())
}

impl Notifier for SlackNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn channel(&self) -> &'static str {
        "slack"
    }

    fn send<'a>(
        &'a self,
        event: &'a Event,
        thread: &'a Thread,
        links: &'a Links,
    ) -> BoxFuture<'a, Result<Sent, NotifyError>> {
        Box::pin(async move {
            let link = links.of(event);
            let link = link.as_ref();
            let session = self.client.open_session(&self.token);
            let root = thread.root.as_deref().and_then(parse_reference);
            if let Some((channel, ts)) = root {
                // The first message shows the current state; repeating this
                // is harmless, so it goes first.
                let content = SlackMessageContent::new()
                    .with_text(blocks::fallback_text(event, link))
                    .with_blocks(self.maybe_buttons(event, blocks::current_state(event, link)));
                let req = SlackApiChatUpdateRequest::new(
                    SlackChannelId(channel.into()),
                    content,
                    SlackTs(ts.into()),
                );
                match session
                    .chat_update(&req)
                    .await
                    .map_err(|e| map_error(&self.name, "chat.update", e))
                {
                    Ok(_) => {}
                    Err(e) if update_gone(&e) => {
                        tracing::warn!(receiver = %self.name, event = %event.key, error = %e,
                            "Cannot update the story's first Slack message; posting in its thread only.")
                    }
                    Err(e) => return Err(e),
                }
                if thread.maybe_sent {
                    tracing::info!(receiver = %self.name, event = %event.key,
                        "An earlier attempt may have posted this reply; the first message shows it, not posting again.");
                    return Ok(Sent {
                        reference: None,
                        root: thread.root.clone(),
                    });
                }
            }
            let content = SlackMessageContent::new()
                .with_text(blocks::fallback_text(event, link))
                .with_blocks(self.maybe_buttons(event, blocks::blocks(event, link)));
            let mut req =
                SlackApiChatPostMessageRequest::new(SlackChannelId(self.channel.clone()), content)
                    .with_unfurl_links(false);
            if let Some((_, ts)) = root {
                req = req.with_thread_ts(SlackTs(ts.into()));
            }
            let resp = session
                .chat_post_message(&req)
                .await
                .map_err(|e| map_error(&self.name, "chat.postMessage", e))?;
            tracing::debug!(receiver = %self.name, channel = %resp.channel.0, ts = %resp.ts.0,
                event = %event.key, "Slack message posted.");
            // chat.update wants the channel's ID, which the answer carries
            // (the configuration may name the channel).
            let own = reference(&resp.channel.0, &resp.ts.0);
            Ok(Sent {
                root: Some(thread.root.clone().unwrap_or_else(|| own.clone())),
                reference: Some(own),
            })
        })
    }
}

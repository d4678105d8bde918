//! The Slack Web API calls approvals make, through slack-morphism: with the
//! app-level token, `apps.connections.open`; with the bot token of the
//! receiver whose messages carry the buttons, `chat.update`,
//! `chat.postEphemeral`, `views.open` and `usergroups.users.list`.
//!
//! Neither token is ever in a log line or an error: errors name the call
//! and Slack's code ([`crate::notify::slack::map_error`]).

use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use slack_morphism::prelude::*;

use crate::config::Secret;
use crate::notify::NotifyError;
use crate::notify::config::{SlackReceiver, is_loopback_http, resolve_secret};
use crate::notify::slack::{connector, map_error};

use super::ChatopsError;
use super::interaction::MessageRef;

type Connector = SlackClientHyperConnector<HttpsConnector<HttpConnector>>;

/// The Slack API as approvals use it.
pub struct SlackApi {
    /// The receiver's name, for errors.
    receiver: String,
    client: Arc<SlackClient<Connector>>,
    /// Bot token (`xoxb-…`); never printed.
    bot: SlackApiToken,
    /// App-level token (`xapp-…`); never printed.
    app: SlackApiToken,
    /// Whether the WebSocket URL may be plain `ws://` (loopback only).
    insecure: bool,
}

impl std::fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackApi")
            .field("receiver", &self.receiver)
            .field("tokens", &"<redacted>")
            .finish()
    }
}

impl SlackApi {
    /// Builds the client of receiver `name` with the app-level token.
    pub fn new(
        name: &str,
        receiver: &SlackReceiver,
        app_token: Secret,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ChatopsError> {
        let err = |message: String| ChatopsError::Config {
            key: "coordinator.slack_app.receiver".into(),
            message,
        };
        let bot = resolve_secret(
            &receiver.token,
            &receiver.token_file,
            &receiver.token_env,
            getenv,
        )
        .map_err(|e| err(format!("receiver {name}: slack token: {e}")))?
        .ok_or_else(|| err(format!("receiver {name}: slack token is not set")))?;
        let url = url::Url::parse(&receiver.api_url)
            .map_err(|e| err(format!("receiver {name}: slack.api_url: {e}")))?;
        let insecure = receiver.allow_insecure && is_loopback_http(&url);
        if url.scheme() != "https" && !insecure {
            return Err(err(format!(
                "receiver {name}: slack.api_url must be https:// (http:// only to loopback with allow_insecure)"
            )));
        }
        let https = connector(insecure).map_err(err)?;
        let api_url = receiver.api_url.trim_end_matches('/').to_string();
        let connector =
            SlackClientHyperConnector::with_connector(https).with_slack_api_url(&api_url);
        Ok(Self {
            receiver: name.into(),
            client: Arc::new(SlackClient::new(connector)),
            bot: SlackApiToken::new(SlackApiTokenValue(bot.expose().to_string())),
            app: SlackApiToken::new(SlackApiTokenValue(app_token.expose().to_string())),
            insecure,
        })
    }

    fn fail(
        &self,
        method: &'static str,
    ) -> impl Fn(slack_morphism::errors::SlackClientError) -> ChatopsError + '_ {
        move |e| ChatopsError::Slack {
            method,
            source: app_hint(map_error(&self.receiver, method, e), method),
        }
    }

    /// `apps.connections.open`: a one-time WebSocket URL. Refuses a plain
    /// `ws://` URL unless the API itself is the loopback stand-in.
    pub async fn open_connection(&self) -> Result<String, ChatopsError> {
        let r = self
            .client
            .open_session(&self.app)
            .apps_connections_open(&SlackApiAppsConnectionOpenRequest::new())
            .await
            .map_err(self.fail("apps.connections.open"))?;
        let url = r.url.0.to_string();
        let plain_allowed = self.insecure && url.starts_with("ws://");
        if !(url.starts_with("wss://") || plain_allowed) {
            return Err(ChatopsError::Slack {
                method: "apps.connections.open",
                source: NotifyError::Unreachable {
                    receiver: self.receiver.clone(),
                    service: "Slack Socket Mode".into(),
                    message: "the WebSocket URL is not wss://".into(),
                },
            });
        }
        Ok(url)
    }

    /// `chat.update`: replaces a message's text and blocks.
    pub async fn update(
        &self,
        message: &MessageRef,
        text: String,
        blocks: Vec<SlackBlock>,
    ) -> Result<(), ChatopsError> {
        let req = SlackApiChatUpdateRequest::new(
            SlackChannelId(message.channel.clone()),
            SlackMessageContent::new()
                .with_text(text)
                .with_blocks(blocks),
            SlackTs(message.ts.clone()),
        );
        self.client
            .open_session(&self.bot)
            .chat_update(&req)
            .await
            .map_err(self.fail("chat.update"))?;
        Ok(())
    }

    /// `chat.postMessage` in the message's thread.
    pub async fn reply(&self, message: &MessageRef, text: String) -> Result<(), ChatopsError> {
        let req = SlackApiChatPostMessageRequest::new(
            SlackChannelId(message.channel.clone()),
            SlackMessageContent::new().with_text(text),
        )
        .with_thread_ts(SlackTs(message.ts.clone()));
        self.client
            .open_session(&self.bot)
            .chat_post_message(&req)
            .await
            .map_err(self.fail("chat.postMessage"))?;
        Ok(())
    }

    /// `chat.postEphemeral`: a line only `user` sees.
    pub async fn tell(&self, channel: &str, user: &str, text: String) -> Result<(), ChatopsError> {
        let req = SlackApiChatPostEphemeralRequest::new(
            SlackChannelId(channel.into()),
            SlackUserId(user.into()),
            SlackMessageContent::new().with_text(text),
        );
        self.client
            .open_session(&self.bot)
            .chat_post_ephemeral(&req)
            .await
            .map_err(self.fail("chat.postEphemeral"))?;
        Ok(())
    }

    /// `views.open`: a modal for the user of `trigger_id`.
    pub async fn open_modal(&self, trigger_id: &str, view: SlackView) -> Result<(), ChatopsError> {
        let req = SlackApiViewsOpenRequest::new(SlackTriggerId(trigger_id.into()), view);
        self.client
            .open_session(&self.bot)
            .views_open(&req)
            .await
            .map_err(self.fail("views.open"))?;
        Ok(())
    }

    /// `usergroups.users.list`: the members of a user group.
    pub async fn group_members(&self, group: &str) -> Result<Vec<String>, ChatopsError> {
        let req = SlackApiUserGroupsUsersListRequest::new(SlackUserGroupId(group.into()));
        let r = self
            .client
            .open_session(&self.bot)
            .usergroups_users_list(&req)
            .await
            .map_err(self.fail("usergroups.users.list"))?;
        Ok(r.users.into_iter().map(|u| u.0).collect())
    }
}

/// What Slack's code means for the calls approvals make, where the
/// notifier's hint (written for `chat.postMessage`) would mislead.
fn app_hint(e: NotifyError, method: &'static str) -> NotifyError {
    let NotifyError::SlackApi {
        receiver,
        code,
        hint,
        ..
    } = e
    else {
        return e;
    };
    let hint = match (method, code.as_str()) {
        (
            "apps.connections.open",
            "invalid_auth" | "not_authed" | "not_allowed_token_type" | "token_revoked",
        ) => {
            "the app-level token (coordinator.slack_app) is wrong or revoked, or lacks connections:write; retrying will not help"
        }
        ("usergroups.users.list", "no_such_subteam") => {
            "a user group in the service's slack_approvers does not exist: fix its ID"
        }
        ("usergroups.users.list", "missing_scope") => {
            "the bot token lacks the usergroups:read scope needed for user groups in slack_approvers"
        }
        ("views.open", "invalid_trigger_id" | "expired_trigger_id") => {
            "the click is too old to open a modal (Slack allows 3 seconds): click Reject again"
        }
        ("chat.update", "message_not_found" | "cant_update_message") => {
            "the message was deleted or is not the bot's"
        }
        _ => hint,
    };
    NotifyError::SlackApi {
        receiver,
        method,
        code,
        hint,
    }
}

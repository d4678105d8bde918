//! Approvals from Slack ("ChatOps"): the buttons on rollgate's Slack
//! messages (Approve and Reject on a plan; Pause, Resume, Abort, Promote on
//! a rollout), answered over Socket Mode, so no public endpoint is needed.
//!
//! - [`config`]: `[coordinator.slack_app]` and `slack_approvers`;
//! - [`socket`]: the Socket Mode connection, acknowledging every envelope at
//!   once and reconnecting with back-off;
//! - [`interaction`]: what an envelope asks (pure);
//! - [`answer`]: who may act, the decision through the same check-and-set as
//!   `rollgate approve`, the message updated in place;
//! - [`messages`]: the modal, the decided message, the ephemeral answers
//!   (pure);
//! - [`api`]: the Slack Web API calls.
//!
//! Only the coordinator's leader runs it ([`ChatOps::run`] is one task of
//! its round), writing with the leader's fenced store: a deposed leader
//! decides nothing. Tokens are never logged or shown.

pub mod answer;
pub mod api;
pub mod config;
pub mod interaction;
pub mod messages;
pub mod socket;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::notify::config::resolve_secret;
use crate::notify::slack::SlackNotifier;
use crate::notify::{NotifyError, Receivers};
use crate::rollout::store::Store;

use self::answer::Answerer;
use self::api::SlackApi;

/// Approvals from Slack could not be set up or an answer failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatopsError {
    /// A configuration key is wrong (the key is named).
    #[error("{key}: {message}")]
    Config {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A Slack Web API call failed.
    #[error("Slack {method}: {source}")]
    Slack {
        /// The method.
        method: &'static str,
        /// Slack's answer, naming the receiver.
        #[source]
        source: NotifyError,
    },
    /// The Socket Mode WebSocket failed.
    #[error("Slack Socket Mode connection: {0}")]
    Socket(String),
    /// Reading or deciding the plan failed.
    #[error(transparent)]
    Store(#[from] crate::rollout::store::StoreError),
}

/// How many envelope IDs are remembered to skip Slack's redeliveries.
const REMEMBERED: usize = 1024;

/// Approvals from Slack, built once per coordinator and run while leading.
#[derive(Debug)]
pub struct ChatOps {
    api: Arc<SlackApi>,
    approvers: Arc<BTreeMap<String, Vec<String>>>,
    timing: socket::Timing,
}

impl ChatOps {
    /// Builds it from `[coordinator.slack_app]`; `None` when that is off.
    pub fn from_config(config: &Config) -> Result<Option<Self>, ChatopsError> {
        Self::from_config_with_env(config, &|name| std::env::var(name).ok())
    }

    /// As [`ChatOps::from_config`], with the environment given.
    pub fn from_config_with_env(
        config: &Config,
        getenv: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ChatopsError> {
        let app = &config.coordinator.slack_app;
        if !app.enabled() {
            return Ok(None);
        }
        let key = "coordinator.slack_app.receiver";
        let receiver = config
            .notify
            .receivers
            .iter()
            .find(|r| r.name == app.receiver)
            .and_then(|r| r.slack.as_ref())
            .ok_or_else(|| ChatopsError::Config {
                key: key.into(),
                message: format!(
                    "{:?} is not a [[notify.receivers]] entry with a slack section",
                    app.receiver
                ),
            })?;
        let token = resolve_secret(
            &app.app_token,
            &app.app_token_file,
            &app.app_token_env,
            getenv,
        )
        .map_err(|e| ChatopsError::Config {
            key: "coordinator.slack_app.app_token_file".into(),
            message: format!("app-level token: {e}"),
        })?
        .ok_or_else(|| ChatopsError::Config {
            key: "coordinator.slack_app.app_token_file".into(),
            message: "set app_token_file or app_token_env to the app-level token (xapp-…)".into(),
        })?;
        if !token.expose().starts_with("xapp-") {
            return Err(ChatopsError::Config {
                key: "coordinator.slack_app.app_token_file".into(),
                message: "not an app-level token (xapp-…)".into(),
            });
        }
        let api = SlackApi::new(&app.receiver, receiver, token, getenv)?;
        let approvers = config
            .services
            .iter()
            .map(|s| (s.name.clone(), s.slack_approvers.clone()))
            .collect();
        Ok(Some(Self {
            api: Arc::new(api),
            approvers: Arc::new(approvers),
            timing: socket::Timing::new(app.reconnect_min, app.reconnect_max),
        }))
    }

    /// Makes the app's receiver show buttons: replaces it in `receivers`
    /// with the same notifier built `with_buttons`.
    pub fn show_buttons(config: &Config, receivers: &mut Receivers) -> Result<(), NotifyError> {
        let app = &config.coordinator.slack_app;
        let Some(r) = config
            .notify
            .receivers
            .iter()
            .find(|r| app.enabled() && r.name == app.receiver)
        else {
            return Ok(());
        };
        let Some(slack) = &r.slack else {
            return Ok(());
        };
        let notifier = SlackNotifier::new(&r.name, slack, &|name| std::env::var(name).ok())?;
        receivers.insert(Arc::new(notifier.with_buttons()), r.fallback.clone());
        Ok(())
    }

    /// Keeps the Socket Mode connection and answers interactions with
    /// `store` (the leader's, fenced) until `cancel`; every answer in
    /// flight is awaited before it returns.
    pub async fn run(self: Arc<Self>, store: Store, cancel: CancellationToken) {
        let (tx, mut rx) = mpsc::channel::<socket::Envelope>(64);
        let answerer = Answerer {
            api: self.api.clone(),
            approvers: self.approvers.clone(),
            store,
        };
        let connection = socket::run(&self.api, tx, self.timing, &cancel);
        tokio::pin!(connection);
        let mut answers = JoinSet::new();
        let mut seen: VecDeque<String> = VecDeque::new();
        loop {
            tokio::select! {
                _ = &mut connection => break,
                Some(done) = answers.join_next(), if !answers.is_empty() => {
                    if let Err(e) = done {
                        tracing::warn!(error = %e, "A Slack answer task failed.");
                    }
                }
                envelope = rx.recv() => {
                    let Some(envelope) = envelope else { break };
                    if seen.contains(&envelope.id) {
                        tracing::debug!(envelope = %envelope.id, retry = envelope.retry_attempt,
                            "Slack delivered an envelope again; answered already.");
                        continue;
                    }
                    seen.push_back(envelope.id.clone());
                    if seen.len() > REMEMBERED {
                        seen.pop_front();
                    }
                    let Some(interaction) = interaction::parse(&envelope.payload) else {
                        tracing::debug!(envelope = %envelope.id, "Slack interaction not for rollgate; ignored.");
                        continue;
                    };
                    let answerer = answerer.clone();
                    answers.spawn(async move {
                        let (user, message) = interaction.asker();
                        let (user, message) = (user.clone(), message.clone());
                        match answerer.answer(interaction).await {
                            Ok(()) => {}
                            // Consul failed: say so rather than leave the click
                            // unanswered (an answer lost on the way may still
                            // have been written: point to the record).
                            Err(e @ ChatopsError::Store(_)) => {
                                tracing::warn!(envelope = %envelope.id, error = %e, "Cannot answer a Slack interaction.");
                                let text = format!(
                                    "This may not have been recorded: {e}. See `rollgate history` or `rollgate status`, then try again."
                                );
                                if let Err(e) = answerer.api.tell(&message.channel, &user.id, text).await {
                                    tracing::warn!(error = %e, "Cannot tell the Slack user.");
                                }
                            }
                            Err(e) => {
                                tracing::warn!(envelope = %envelope.id, error = %e, "Cannot answer a Slack interaction.");
                            }
                        }
                    });
                }
            }
        }
        while answers.join_next().await.is_some() {}
    }
}

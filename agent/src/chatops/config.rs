//! `[coordinator.slack_app]`: the Slack app whose buttons approve plans,
//! answered over Socket Mode; and the rules for `[[services]]
//! slack_approvers`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Problems, Secret};

/// The Slack app rollgate answers button clicks for. Off while `receiver`
/// is empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SlackAppConfig {
    /// The `[[notify.receivers]]` entry (a `slack` Web API receiver) whose
    /// messages carry the buttons; its bot token, API URL and channel are
    /// used to answer (`chat.update`, `chat.postEphemeral`, `views.open`).
    /// Empty: no buttons, no Socket Mode connection.
    pub receiver: String,
    /// The app-level token (`xapp-…`, scope `connections:write`). Prefer
    /// `app_token_file` or `app_token_env`.
    pub app_token: Option<Secret>,
    /// File holding the app-level token.
    pub app_token_file: Option<PathBuf>,
    /// Environment variable holding the app-level token.
    pub app_token_env: Option<String>,
    /// First wait before opening the connection again after it dropped or
    /// could not be opened; doubles per failure in a row.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest wait between two attempts to open the connection.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
}

impl Default for SlackAppConfig {
    fn default() -> Self {
        Self {
            receiver: String::new(),
            app_token: None,
            app_token_file: None,
            app_token_env: None,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
        }
    }
}

impl SlackAppConfig {
    /// Whether approvals from Slack are on.
    pub fn enabled(&self) -> bool {
        !self.receiver.is_empty()
    }

    /// The rules that need nothing but this section.
    pub(crate) fn validate(&self, p: &mut Problems) {
        let key = |k: &str| format!("coordinator.slack_app.{k}");
        if !self.enabled() {
            return;
        }
        let sources = [
            self.app_token.is_some(),
            self.app_token_file.is_some(),
            self.app_token_env.is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => p.push(
                &key("app_token_file"),
                "",
                "is required with coordinator.slack_app.receiver: set app_token_file or app_token_env to the app-level token (xapp-…)",
            ),
            1 => {}
            _ => p.push(
                &key("app_token"),
                "<redacted>",
                "set only one of app_token, app_token_file, app_token_env",
            ),
        }
        if let Some(t) = &self.app_token
            && !t.expose().starts_with("xapp-")
        {
            p.push(
                &key("app_token"),
                "<redacted>",
                "must be an app-level token (xapp-…), not a bot token",
            );
        }
        let s = Duration::from_secs;
        p.duration_in(
            &key("reconnect_min"),
            self.reconnect_min,
            Duration::from_millis(10),
            s(60),
        );
        p.duration_in(&key("reconnect_max"), self.reconnect_max, s(1), s(3600));
    }
}

/// Whether `id` looks like a Slack user (`U…`, `W…`) or user group (`S…`) ID.
pub fn valid_approver(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some('U' | 'W' | 'S'))
        && id.len() >= 3
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// The rules that need the whole configuration: the receiver exists and is
/// a Slack Web API one; approvers are Slack IDs.
pub(crate) fn validate_with(config: &crate::config::Config, p: &mut Problems) {
    let app = &config.coordinator.slack_app;
    for (i, svc) in config.services.iter().enumerate() {
        for (j, id) in svc.slack_approvers.iter().enumerate() {
            if !valid_approver(id) {
                p.push(
                    &format!("services[{i}].slack_approvers[{j}]"),
                    id,
                    "must be a Slack user ID (U…, W…) or user group ID (S…), not a name",
                );
            }
        }
    }
    if !app.enabled() {
        return;
    }
    match config
        .notify
        .receivers
        .iter()
        .find(|r| r.name == app.receiver)
    {
        None => p.push(
            "coordinator.slack_app.receiver",
            &app.receiver,
            "must name a [[notify.receivers]] entry",
        ),
        Some(r) if r.slack.is_none() => p.push(
            "coordinator.slack_app.receiver",
            &app.receiver,
            "must name a receiver with a `slack` (Web API) section: webhooks cannot answer clicks",
        ),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvers_are_ids_not_names() {
        assert!(valid_approver("U0123ABC"));
        assert!(valid_approver("S0OPS"));
        assert!(valid_approver("W012"));
        assert!(!valid_approver("alice"));
        assert!(!valid_approver("@alice"));
        assert!(!valid_approver("U"));
        assert!(!valid_approver("C0ALERTS"));
    }

    #[test]
    fn the_receiver_must_be_a_slack_web_api_one_and_approvers_ids() {
        use crate::notify::config::{ReceiverConfig, SlackReceiver, WebhookReceiver};
        let mut c = crate::config::Config::default();
        c.coordinator.slack_app.receiver = "ops-slack".into();
        c.services = vec![crate::coordinator::config::ServiceConfig {
            name: "web".into(),
            slack_approvers: vec!["U0ALICE".into(), "alice".into()],
            ..Default::default()
        }];
        let mut p = Problems::default();
        validate_with(&c, &mut p);
        let text = format!("{p:?}");
        assert!(text.contains("services[0].slack_approvers[1]"), "{text}");
        assert!(!text.contains("slack_approvers[0]"), "{text}");
        assert!(
            text.contains("must name a [[notify.receivers]] entry"),
            "{text}"
        );

        c.notify.receivers = vec![ReceiverConfig {
            name: "ops-slack".into(),
            webhook: Some(WebhookReceiver::default()),
            ..Default::default()
        }];
        let mut p = Problems::default();
        validate_with(&c, &mut p);
        assert!(
            format!("{p:?}").contains("webhooks cannot answer clicks"),
            "{p:?}"
        );

        c.notify.receivers[0].webhook = None;
        c.notify.receivers[0].slack = Some(SlackReceiver::default());
        c.services[0].slack_approvers.pop();
        let mut p = Problems::default();
        validate_with(&c, &mut p);
        assert_eq!(format!("{p:?}"), format!("{:?}", Problems::default()));
    }

    #[test]
    fn an_enabled_app_needs_exactly_one_token_source_and_never_prints_it() {
        let mut p = Problems::default();
        SlackAppConfig {
            receiver: "ops-slack".into(),
            ..SlackAppConfig::default()
        }
        .validate(&mut p);
        let text = format!("{p:?}");
        assert!(
            text.contains("coordinator.slack_app.app_token_file"),
            "{text}"
        );

        let mut p = Problems::default();
        SlackAppConfig {
            receiver: "ops-slack".into(),
            app_token: Some(Secret::new("xoxb-not-an-app-token")),
            ..SlackAppConfig::default()
        }
        .validate(&mut p);
        let text = format!("{p:?}");
        assert!(text.contains("app-level token"), "{text}");
        assert!(!text.contains("xoxb-not-an-app-token"), "{text}");

        let mut p = Problems::default();
        SlackAppConfig::default().validate(&mut p);
        assert_eq!(format!("{p:?}"), format!("{:?}", Problems::default()));
    }
}

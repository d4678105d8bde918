//! Routing: which receivers an event goes to, by kind, service, tag and
//! severity. Pure; the first matching route wins unless it says `continue`.

use super::Event;
use super::config::{NotifyConfig, RouteConfig};

/// The routes of `[notify]`, with the default receivers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Router {
    routes: Vec<RouteConfig>,
    default_receivers: Vec<String>,
}

impl Router {
    /// The router `[notify]` describes.
    pub fn new(config: &NotifyConfig) -> Self {
        Self {
            routes: config.routes.clone(),
            default_receivers: config.default_receivers.clone(),
        }
    }

    /// Receiver names for `event`, without duplicates, in route order.
    pub fn route(&self, event: &Event) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut matched = false;
        for r in &self.routes {
            if !matches(r, event) {
                continue;
            }
            matched = true;
            for name in &r.receivers {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
            if !r.continue_matching {
                break;
            }
        }
        if !matched {
            out = self.default_receivers.clone();
        }
        out
    }
}

fn matches(r: &RouteConfig, e: &Event) -> bool {
    (r.kinds.is_empty() || r.kinds.iter().any(|k| k == e.body.kind()))
        && (r.services.is_empty() || r.services.contains(&e.service))
        && (r.tags.is_empty() || r.tags.iter().any(|t| e.tags.contains(t)))
        && r.min_severity.is_none_or(|min| e.severity >= min)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{Event, EventBody, MetaKind, MetaNotice, Severity};

    fn event(service: &str, tags: &[&str], severity: Severity) -> Event {
        let mut e = Event::meta(
            MetaNotice {
                kind: MetaKind::NoLeader,
                status: crate::notify::AlertStatus::Firing,
                since_ms: 0,
                detail: String::new(),
            },
            0,
        );
        e.service = service.into();
        e.tags = tags.iter().map(|t| t.to_string()).collect();
        e.severity = severity;
        e.body = EventBody::Meta(match e.body {
            EventBody::Meta(m) => m,
            _ => unreachable!(),
        });
        e
    }

    fn route(
        services: &[&str],
        tags: &[&str],
        min: Option<Severity>,
        to: &[&str],
        cont: bool,
    ) -> RouteConfig {
        RouteConfig {
            services: services.iter().map(|s| s.to_string()).collect(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            min_severity: min,
            receivers: to.iter().map(|s| s.to_string()).collect(),
            continue_matching: cont,
            ..RouteConfig::default()
        }
    }

    #[test]
    fn first_match_wins_unless_continue_and_default_catches_the_rest() {
        let config = NotifyConfig {
            default_receivers: vec!["catch-all".into()],
            routes: vec![
                route(&["web"], &[], Some(Severity::Critical), &["pager"], true),
                route(&["web"], &[], None, &["web-slack"], false),
                route(&[], &["db"], None, &["dba"], false),
            ],
            ..NotifyConfig::default()
        };
        let r = Router::new(&config);
        assert_eq!(
            r.route(&event("web", &[], Severity::Critical)),
            ["pager", "web-slack"]
        );
        assert_eq!(
            r.route(&event("web", &[], Severity::Warning)),
            ["web-slack"]
        );
        assert_eq!(
            r.route(&event("api", &["db", "x"], Severity::Info)),
            ["dba"]
        );
        assert_eq!(r.route(&event("api", &[], Severity::Info)), ["catch-all"]);
    }

    #[test]
    fn kinds_filter_events() {
        let config = NotifyConfig {
            routes: vec![RouteConfig {
                kinds: vec!["rollout".into()],
                receivers: vec!["deploys".into()],
                ..RouteConfig::default()
            }],
            ..NotifyConfig::default()
        };
        assert!(
            Router::new(&config)
                .route(&event("web", &[], Severity::Critical))
                .is_empty()
        );
    }
}

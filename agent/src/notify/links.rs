//! Links from messages to the console's pages, when `[http] public_url`
//! says where people reach the console: a plan waiting for approval links
//! to `{public_url}/plans/{plan}`, every other rollout notice to
//! `{public_url}/services/{service}` (the service's page shows its active
//! rollout live, or its last outcome). Health and meta alerts carry none.
//!
//! Pure: it builds URLs, it never checks that the console answers there.
//! Without `public_url` no message carries a link.

use super::{Event, EventBody, RolloutStage};

/// Where the console is, for links (none when `public_url` is unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// `[http] public_url`, parsed; `None` when unset.
    base: Option<url::Url>,
}

/// One link: what it opens, in words, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// `Review plan web-3 in the console`.
    pub label: String,
    /// `https://rollgate.example.com/plans/web-3`.
    pub url: String,
}

impl Links {
    /// No links.
    pub fn none() -> Self {
        Self::default()
    }

    /// Links under `public_url` (`[http] public_url`, validated with the
    /// configuration); an empty or unparsable value makes none.
    pub fn new(public_url: &str) -> Self {
        let trimmed = public_url.trim();
        if trimmed.is_empty() {
            return Self::none();
        }
        Self {
            base: url::Url::parse(trimmed)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https")),
        }
    }

    /// The URL of the page at `segments` under the base (each segment
    /// percent-encoded as a path segment), if links are on.
    fn page(&self, segments: &[&str]) -> Option<String> {
        let mut url = self.base.clone()?;
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut path = url.path_segments_mut().ok()?;
            path.pop_if_empty();
            path.extend(segments);
        }
        Some(url.to_string())
    }

    /// The page of plan `id`.
    pub fn plan(&self, id: &str) -> Option<String> {
        self.page(&["plans", id])
    }

    /// The page of service `name`.
    pub fn service(&self, name: &str) -> Option<String> {
        self.page(&["services", name])
    }

    /// The link a message about `event` carries, if any.
    pub fn of(&self, event: &Event) -> Option<Link> {
        let EventBody::Rollout(r) = &event.body else {
            return None;
        };
        if r.stage == Some(RolloutStage::PendingApproval) && !r.rollout_id.is_empty() {
            return Some(Link {
                label: format!("Review plan {} in the console", r.rollout_id),
                url: self.plan(&r.rollout_id)?,
            });
        }
        let service = if r.service.is_empty() {
            event.service.as_str()
        } else {
            r.service.as_str()
        };
        if service.is_empty() {
            return None;
        }
        Some(Link {
            label: format!("Open {service}'s rollout in the console"),
            url: self.service(service)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{MetaKind, MetaNotice, RolloutNotice};

    fn rollout(stage: RolloutStage) -> Event {
        Event::rollout(
            RolloutNotice {
                rollout_id: "web-3".into(),
                stage: Some(stage),
                service: "web".into(),
                ..RolloutNotice::default()
            },
            Vec::new(),
            0,
        )
    }

    #[test]
    fn a_plan_links_to_its_page_and_a_rollout_to_its_service() {
        let links = Links::new("https://rollgate.example.com/");
        let plan = links.of(&rollout(RolloutStage::PendingApproval));
        assert_eq!(
            plan.map(|l| l.url).as_deref(),
            Some("https://rollgate.example.com/plans/web-3")
        );
        let failed = links.of(&rollout(RolloutStage::Failed));
        assert_eq!(
            failed.map(|l| l.url).as_deref(),
            Some("https://rollgate.example.com/services/web")
        );
    }

    #[test]
    fn a_base_path_is_kept_and_segments_are_encoded() {
        let links = Links::new("https://ops.example.com/rollgate?x=1");
        assert_eq!(
            links.plan("we b/1").as_deref(),
            Some("https://ops.example.com/rollgate/plans/we%20b%2F1")
        );
    }

    #[test]
    fn no_public_url_or_no_plan_means_no_link() {
        assert_eq!(Links::new("").of(&rollout(RolloutStage::Started)), None);
        assert_eq!(Links::new("not a url").plan("web-1"), None);
        let meta = Event::meta(
            MetaNotice {
                kind: MetaKind::NoLeader,
                status: crate::notify::AlertStatus::Firing,
                since_ms: 0,
                detail: String::new(),
            },
            0,
        );
        assert_eq!(Links::new("https://r.example.com").of(&meta), None);
    }
}

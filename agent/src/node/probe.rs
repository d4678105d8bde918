//! The agent's own probe of the app: `/health` answers 2xx and `/version`
//! names the version baked into the image.
//!
//! The result becomes the TTL check's status and output, so the output must
//! say exactly what is wrong (which URL, which status, which versions) for
//! the operator reading a failed rollout's reason.
//!
//! The status tells "not answering yet" from "answering, and wrong" (the
//! rollout fails a batch early only on the second; see `rollgate_core`'s
//! `health` module):
//!
//! | what the probe got | before the app's first answer | after it |
//! |---|---|---|
//! | no answer: connection refused or reset, timeout | warning | critical |
//! | `/health` 502, 503 or 504 (a booting app, or a proxy whose app is not listening) | warning | critical |
//! | `/health` 429 (overloaded) | warning | warning |
//! | `/health` any other non-2xx | critical | critical |
//! | `/version` not 2xx, not JSON, or another version | critical | critical |
//! | `/health` 2xx and the expected version | passing | passing |
//!
//! The app's first answer is any answer other than the "not yet" ones: a
//! 2xx, a 429, or a bad status. Once it has answered, silence means it
//! crashed or hangs: critical. The memory lasts as long as the agent
//! process; an agent restarted beside a dead app waits for an answer again
//! (the rollout's `healthy_deadline` still applies).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::consul::types::CheckStatus;

/// Outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// What the TTL check is set to.
    pub status: CheckStatus,
    /// What the TTL check's output says.
    pub output: String,
}

impl ProbeResult {
    fn critical(output: String) -> Self {
        Self {
            status: CheckStatus::Critical,
            output,
        }
    }

    fn warning(output: String) -> Self {
        Self {
            status: CheckStatus::Warning,
            output,
        }
    }
}

/// Probes the app at `app_url`.
#[derive(Debug)]
pub struct Prober {
    http: reqwest::Client,
    app_url: String,
    expected_version: String,
    timeout: Duration,
    /// The app has answered at least once (see the module documentation):
    /// from then on, no answer is critical.
    answered: AtomicBool,
}

#[derive(serde::Deserialize)]
struct VersionBody {
    version: String,
}

const BODY_SNIPPET: usize = 200;

impl Prober {
    /// A prober of `app_url` expecting `expected_version`, each request
    /// limited to `timeout`.
    pub fn new(app_url: &str, expected_version: &str, timeout: Duration) -> Self {
        let http = super::local_http_client(app_url)
            .timeout(timeout)
            .no_proxy()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap_or_default();
        Self {
            http,
            app_url: app_url.trim_end_matches('/').to_string(),
            expected_version: expected_version.to_string(),
            timeout,
            answered: AtomicBool::new(false),
        }
    }

    /// Whether the app has answered at least once.
    pub fn has_answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    /// No answer, or a "not yet" one: warning until the app has answered
    /// once, critical after.
    fn silent(&self, what: String) -> ProbeResult {
        if self.has_answered() {
            ProbeResult::critical(format!("{what} (the app had answered before)"))
        } else {
            ProbeResult::warning(format!("not answering yet: {what}"))
        }
    }

    /// One probe: health first, then the version.
    pub async fn probe(&self) -> ProbeResult {
        let started = Instant::now();
        let health_url = format!("{}/health", self.app_url);
        let (status, body) = match self.get(&health_url).await {
            Ok(r) => r,
            Err(e) => return self.silent(e),
        };
        if matches!(status, 502..=504) {
            return self.silent(format!("GET {health_url} answered {status}: {body}"));
        }
        self.answered.store(true, Ordering::Relaxed);
        match status {
            200..=299 => {}
            429 => {
                return ProbeResult::warning(format!(
                    "GET {health_url} answered 429 (overloaded): {body}"
                ));
            }
            s => return ProbeResult::critical(format!("GET {health_url} answered {s}: {body}")),
        }
        let version_url = format!("{}/version", self.app_url);
        let (status, body) = match self.get(&version_url).await {
            Ok(r) => r,
            Err(e) => return ProbeResult::critical(e),
        };
        if !(200..=299).contains(&status) {
            return ProbeResult::critical(format!("GET {version_url} answered {status}: {body}"));
        }
        let version = match serde_json::from_str::<VersionBody>(&body) {
            Ok(v) => v.version,
            Err(_) => {
                return ProbeResult::critical(format!(
                    "GET {version_url} did not answer JSON with a \"version\" field: {body:?}"
                ));
            }
        };
        if version != self.expected_version {
            return ProbeResult::critical(format!(
                "version mismatch: the app reports {version:?} but the image expects {:?}",
                self.expected_version
            ));
        }
        ProbeResult {
            status: CheckStatus::Passing,
            output: format!(
                "healthy: GET /health 2xx and version {version} as expected ({} ms)",
                started.elapsed().as_millis()
            ),
        }
    }

    async fn get(&self, url: &str) -> Result<(u16, String), String> {
        let resp = self.http.get(url).send().await.map_err(|e| {
            if e.is_timeout() {
                format!(
                    "GET {url} timed out after {}",
                    humantime::format_duration(self.timeout)
                )
            } else if e.is_connect() {
                format!("GET {url}: connection failed (is the app running?)")
            } else {
                format!("GET {url}: {}", e.without_url())
            }
        })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| {
            if e.is_timeout() {
                format!(
                    "GET {url}: body not received within {}",
                    humantime::format_duration(self.timeout)
                )
            } else {
                format!("GET {url}: {}", e.without_url())
            }
        })?;
        let mut body = body.trim().to_string();
        if body.len() > BODY_SNIPPET {
            let mut end = BODY_SNIPPET;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body.truncate(end);
            body.push('…');
        }
        Ok((status, body))
    }
}

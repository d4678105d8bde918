//! The HTTP surface: `/`, `/version` and `/health`.
//!
//! Every handler asks [`Readiness`] for the state at the moment of the
//! request. A booting app serves nothing (503 everywhere), so a load balancer
//! or a rollout that routes to it too early sees failures, as it would in
//! production.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::Settings;
use crate::readiness::{Health, Readiness};

/// The service name reported by `/version`.
pub const NAME: &str = "web";

/// Body of `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The version of the image this app stands for (`WEB_VERSION`): how the
    /// rollout and the load generator tell old instances from new ones.
    pub version: String,
    /// Always `web`: tells a caller it reached this service and not, say,
    /// Apache's default page.
    pub name: String,
}

/// What every handler needs.
#[derive(Debug)]
struct AppState {
    /// The version to report, from the settings.
    version: String,
    /// The schedule deciding booting / ready / unhealthy.
    readiness: Readiness,
}

/// The app's router for `settings`, with `readiness` deciding what it answers
/// over time.
pub fn router(settings: &Settings, readiness: Readiness) -> Router {
    let state = Arc::new(AppState {
        version: settings.version.clone(),
        readiness,
    });
    Router::new()
        .route("/", get(index))
        .route("/version", get(version))
        .route("/health", get(health))
        .with_state(state)
}

/// The 503 a booting app answers with, on every path.
fn booting() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        "booting\n",
    )
        .into_response()
}

async fn index(State(state): State<Arc<AppState>>) -> Response {
    if state.readiness.now() == Health::Booting {
        return booting();
    }
    let version = escape_html(&state.version);
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{NAME} {version}</title></head>\n\
         <body><h1>{NAME}</h1><p>Version <code>{version}</code>.</p></body>\n</html>\n"
    ))
    .into_response()
}

async fn version(State(state): State<Arc<AppState>>) -> Response {
    if state.readiness.now() == Health::Booting {
        return booting();
    }
    Json(VersionInfo {
        version: state.version.clone(),
        name: NAME.to_owned(),
    })
    .into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.readiness.now() {
        Health::Booting => booting(),
        Health::Ready => (StatusCode::OK, format!("ok {}\n", state.version)).into_response(),
        Health::Unhealthy => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unhealthy {}\n", state.version),
        )
            .into_response(),
    }
}

/// Escapes the characters that matter in HTML text and attribute values: the
/// version comes from the environment and is not trusted to be markup.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape_html(r#"<b>"1"&'2'</b>"#),
            "&lt;b&gt;&quot;1&quot;&amp;&#39;2&#39;&lt;/b&gt;"
        );
        assert_eq!(escape_html("1.2.3"), "1.2.3");
    }
}

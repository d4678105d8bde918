//! A timestamping pass-through HTTP proxy in front of moto, for the
//! benches that must tell the coordinator's own time from the emulator's.
//!
//! Only the coordinator's `aws_endpoint` points here (the fleet simulator
//! and the bench's seeding talk to moto directly), so every recorded call is
//! one the coordinator made. Each request is forwarded unchanged (method,
//! path, query, headers but `Host`, body) over a pooled connection, and its
//! answer is returned unchanged; for each the proxy records the instant it
//! arrived (its body read), its AWS `Action` and the parameters that say
//! what it acts on (group name, instance IDs), and the instant moto's
//! answer was back. Instants are this process's, the clock of the sandbox
//! Consul's commit journal, so both can be compared directly.
//!
//! It must never change what the coordinator sees: no retry, no rewrite;
//! an unreachable moto is a 502 the SDK reports as a failed call.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

/// One call the coordinator made.
#[derive(Debug, Clone)]
pub struct AwsCall {
    /// `Action` of the query-protocol body (`SetInstanceProtection`, ...),
    /// or `?` when there was none.
    pub action: String,
    /// `AutoScalingGroupName` or the first `AutoScalingGroupNames.member.N`.
    pub group: Option<String>,
    /// Every `InstanceIds.member.N` / `InstanceId.N` / `InstanceId`.
    pub instances: Vec<String>,
    /// `ProtectedFromScaleIn`, when given.
    pub protect: Option<bool>,
    /// When the request (its body read) reached the proxy.
    pub arrived: Instant,
    /// When moto's answer was back at the proxy.
    pub answered: Instant,
    /// moto's HTTP status (502 when it could not be reached).
    pub status: u16,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    http: reqwest::Client,
    calls: Mutex<Vec<AwsCall>>,
}

/// A running tap; stopped on [`AwsTap::shutdown`] or drop.
#[derive(Debug)]
pub struct AwsTap {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl AwsTap {
    /// Listens on a free loopback port and forwards to `upstream`
    /// (`http://127.0.0.1:PORT`, moto's endpoint).
    pub async fn start(upstream: &str) -> anyhow::Result<AwsTap> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(256)
                .build()?,
            calls: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&shared));
        let cancel = CancellationToken::new();
        let stop = cancel.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await;
        });
        Ok(AwsTap {
            addr,
            shared,
            cancel,
        })
    }

    /// `http://127.0.0.1:PORT`, the endpoint to give the coordinator.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call recorded so far, in order of arrival.
    pub fn calls(&self) -> Vec<AwsCall> {
        let mut calls = self
            .shared
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        calls.sort_by_key(|c| c.arrived);
        calls
    }

    /// Stops listening.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl Drop for AwsTap {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn forward(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let mut call = parse(&body, arrived);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = shared
        .http
        .request(method, format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    let (status, response) = match request.send().await {
        Ok(r) => {
            let status = r.status();
            let headers = r.headers().clone();
            match r.bytes().await {
                Ok(bytes) => {
                    let mut out = (status, bytes).into_response();
                    for (name, value) in &headers {
                        if name != axum::http::header::CONTENT_LENGTH
                            && name != axum::http::header::TRANSFER_ENCODING
                            && name != axum::http::header::CONNECTION
                        {
                            out.headers_mut().append(name, value.clone());
                        }
                    }
                    (status.as_u16(), out)
                }
                Err(e) => bad_gateway(&e),
            }
        }
        Err(e) => bad_gateway(&e),
    };
    call.answered = Instant::now();
    call.status = status;
    shared
        .calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(call);
    response
}

fn bad_gateway(e: &reqwest::Error) -> (u16, Response) {
    (
        502,
        (StatusCode::BAD_GATEWAY, format!("aws tap: moto: {e}")).into_response(),
    )
}

/// Reads a query-protocol body (`application/x-www-form-urlencoded`).
fn parse(body: &[u8], arrived: Instant) -> AwsCall {
    let mut call = AwsCall {
        action: "?".to_string(),
        group: None,
        instances: Vec::new(),
        protect: None,
        arrived,
        answered: arrived,
        status: 0,
    };
    for (key, value) in url::form_urlencoded::parse(body) {
        if key == "Action" {
            call.action = value.into_owned();
        } else if key == "AutoScalingGroupName"
            || (key.starts_with("AutoScalingGroupNames.member.") && call.group.is_none())
        {
            call.group = Some(value.into_owned());
        } else if key == "InstanceId"
            || key.starts_with("InstanceIds.member.")
            || key.starts_with("InstanceId.")
        {
            call.instances.push(value.into_owned());
        } else if key == "ProtectedFromScaleIn" {
            call.protect = Some(value == "true");
        }
    }
    call
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_query_protocol_body_names_its_action_group_and_instances() {
        let body =
            b"Action=SetInstanceProtection&Version=2011-01-01&AutoScalingGroupName=svc01-asg\
                     &InstanceIds.member.1=i-1&InstanceIds.member.2=i-2&ProtectedFromScaleIn=true";
        let c = parse(body, Instant::now());
        assert_eq!(c.action, "SetInstanceProtection");
        assert_eq!(c.group.as_deref(), Some("svc01-asg"));
        assert_eq!(c.instances, vec!["i-1", "i-2"]);
        assert_eq!(c.protect, Some(true));
        let c = parse(b"Action=DescribeInstances&InstanceId.1=i-9", Instant::now());
        assert_eq!(c.action, "DescribeInstances");
        assert_eq!(c.instances, vec!["i-9"]);
        assert_eq!(parse(b"", Instant::now()).action, "?");
    }

    #[tokio::test]
    async fn requests_are_forwarded_unchanged_and_recorded() {
        // An upstream that echoes the body back with a header.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = listener.local_addr().unwrap();
        let app = Router::new().fallback(|uri: Uri, body: Bytes| async move {
            (
                [("x-upstream", "yes")],
                format!("{} {}", uri, String::from_utf8_lossy(&body)),
            )
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        let tap = AwsTap::start(&format!("http://{up}")).await.unwrap();
        let r = reqwest::Client::new()
            .post(format!("{}/path?q=1", tap.endpoint()))
            .body("Action=DescribeAutoScalingGroups&AutoScalingGroupNames.member.1=web-asg")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-upstream"], "yes");
        assert_eq!(
            r.text().await.unwrap(),
            "/path?q=1 Action=DescribeAutoScalingGroups&AutoScalingGroupNames.member.1=web-asg"
        );
        let calls = tap.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].action, "DescribeAutoScalingGroups");
        assert_eq!(calls[0].group.as_deref(), Some("web-asg"));
        assert_eq!(calls[0].status, 200);
        assert!(calls[0].answered >= calls[0].arrived);
    }
}

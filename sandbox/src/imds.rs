//! An IMDSv2-compatible instance metadata endpoint, one per simulated instance.
//!
//! The real `rollgate agent` learns which instance it runs on from the EC2
//! Instance Metadata Service. The fleet simulator starts one of these per
//! simulated instance and points that instance's agent at it, so the agent's
//! identity code is the production code, unchanged. moto's own metadata
//! endpoint cannot serve: it sends no token TTL header (which
//! `aws_config::imds::Client` insists on) and has no identity document.
//!
//! What it does, as the EC2 user guide describes IMDSv2 with tokens required:
//!
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`
//!   (1 to 21600) answers an opaque token and echoes the TTL header; a missing
//!   or invalid TTL is 400, a `PUT` to a version-specific token path is 403.
//! - Every `GET`/`HEAD` needs an unexpired token from this endpoint in
//!   `X-aws-ec2-metadata-token`, else 401 (checked before the path, so an
//!   unauthenticated caller learns nothing).
//! - Any request carrying `X-Forwarded-For` is 403: IMDS refuses token `PUT`s
//!   that went through a proxy, and this endpoint refuses proxied `GET`s too,
//!   so a misrouted request in the sandbox fails loudly.
//! - Leaves: `meta-data/{ami-id, hostname, instance-id, instance-type,
//!   local-hostname, local-ipv4, placement/availability-zone,
//!   placement/region}` and `dynamic/instance-identity/document`. A path
//!   ending in `/` (or naming a directory) lists its entries, one per line,
//!   directories with a trailing `/`. Anything else is 404. All bodies are
//!   `text/plain`.
//!
//! It never signs the identity document (no `signature`/`pkcs7` paths) and
//! serves no credentials: the sandbox's AWS stand-in takes static ones.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Request header of the token `PUT`: the token's lifetime in seconds. The
/// response carries it back, as IMDS does.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// Request header carrying the token on metadata `GET`s.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// The longest token lifetime IMDS grants: six hours.
pub const MAX_TTL_SECONDS: u32 = 21_600;
/// The identity document format version IMDS reports today.
const DOCUMENT_VERSION: &str = "2017-09-30";
/// Architecture of the simulated images.
const ARCHITECTURE: &str = "x86_64";

/// Who a simulated instance is: the facts its metadata endpoint reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// EC2 instance id (`i-...`), as moto assigned it: the agent registers its
    /// Consul service under it, and the rollout matches Consul health to Auto
    /// Scaling instances through it.
    pub instance_id: String,
    /// The AMI the instance was launched from: tells the agent (and the
    /// rollout, through Consul metadata) which image version it runs.
    pub ami_id: String,
    /// Availability zone, e.g. `us-east-1a`: reported to Consul so a rollout
    /// can reason about placement.
    pub availability_zone: String,
    /// Region, e.g. `us-east-1`: the SDK clients the agent builds need it.
    pub region: String,
    /// Private IPv4 address: the address the agent registers the service at.
    /// In the sandbox, a loopback address.
    pub local_ipv4: Ipv4Addr,
    /// Instance type, e.g. `t3.micro`: informational, shown in status output.
    pub instance_type: String,
    /// The twelve-digit AWS account id: part of the identity document.
    pub account_id: String,
}

impl Identity {
    /// The hostname EC2 would give this address: `ip-10-0-0-1.ec2.internal`
    /// in `us-east-1`, `ip-10-0-0-1.REGION.compute.internal` elsewhere.
    pub fn local_hostname(&self) -> String {
        let dashed = self.local_ipv4.to_string().replace('.', "-");
        if self.region == "us-east-1" {
            format!("ip-{dashed}.ec2.internal")
        } else {
            format!("ip-{dashed}.{}.compute.internal", self.region)
        }
    }

    /// The instance identity document for this instance, launched (pending)
    /// at `pending_time`.
    pub fn document(&self, pending_time: SystemTime) -> IdentityDocument {
        IdentityDocument {
            account_id: self.account_id.clone(),
            architecture: ARCHITECTURE.to_owned(),
            availability_zone: self.availability_zone.clone(),
            billing_products: None,
            devpay_product_codes: None,
            marketplace_product_codes: None,
            image_id: self.ami_id.clone(),
            instance_id: self.instance_id.clone(),
            instance_type: self.instance_type.clone(),
            kernel_id: None,
            pending_time: humantime::format_rfc3339_seconds(pending_time).to_string(),
            private_ip: self.local_ipv4.to_string(),
            ramdisk_id: None,
            region: self.region.clone(),
            version: DOCUMENT_VERSION.to_owned(),
        }
    }
}

/// `dynamic/instance-identity/document`, with the fields and names AWS
/// documents. Fields that never apply to the sandbox are always `null`, as on
/// a plain EC2 instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityDocument {
    /// AWS account that launched the instance.
    pub account_id: String,
    /// Architecture of the AMI (`x86_64` here).
    pub architecture: String,
    /// Availability zone the instance runs in.
    pub availability_zone: String,
    /// Billing products; `null` here.
    pub billing_products: Option<Vec<String>>,
    /// Deprecated by AWS; always `null`.
    pub devpay_product_codes: Option<Vec<String>>,
    /// Marketplace product codes of the AMI; `null` here.
    pub marketplace_product_codes: Option<Vec<String>>,
    /// The AMI the instance was launched from.
    pub image_id: String,
    /// The instance id.
    pub instance_id: String,
    /// The instance type.
    pub instance_type: String,
    /// Kernel id, for paravirtual images only; `null` here.
    pub kernel_id: Option<String>,
    /// When the instance was launched, RFC 3339 in UTC to the second.
    pub pending_time: String,
    /// Private IPv4 address.
    pub private_ip: String,
    /// RAM disk id, for paravirtual images only; `null` here.
    pub ramdisk_id: Option<String>,
    /// Region the instance runs in.
    pub region: String,
    /// Version of the document format.
    pub version: String,
}

/// A running metadata endpoint. Dropping it stops the server in the
/// background; [`ImdsHandle::shutdown`] stops it and waits until the port is
/// free.
#[derive(Debug)]
pub struct ImdsHandle {
    /// The bound address (the real port when started on port 0): what the
    /// agent under test is pointed at.
    addr: SocketAddr,
    /// Cancelled to make the server stop accepting and finish.
    cancel: CancellationToken,
    /// The server task; taken by `shutdown`, which awaits it.
    task: Option<JoinHandle<io::Result<()>>>,
}

impl ImdsHandle {
    /// The address the endpoint listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint as a URL, `http://ADDR`, the form the AWS SDK's IMDS
    /// endpoint override takes.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server, lets in-flight requests finish, and returns once the
    /// listening socket is closed.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.cancel.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for ImdsHandle {
    fn drop(&mut self) {
        // The server task sees this and ends on its own; nothing is leaked.
        self.cancel.cancel();
    }
}

/// Starts a metadata endpoint for `identity` on `addr` (port 0 picks a free
/// port). The identity document's `pendingTime` is the moment of this call.
pub async fn start(identity: Identity, addr: SocketAddr) -> io::Result<ImdsHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        document: document_json(&identity, SystemTime::now())?,
        identity,
        tokens: Mutex::new(HashMap::new()),
    });
    let app = Router::new().fallback(handle).with_state(shared);
    let cancel = CancellationToken::new();
    let stop = cancel.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
    });
    debug!(%addr, "IMDS endpoint started.");
    Ok(ImdsHandle {
        addr,
        cancel,
        task: Some(task),
    })
}

fn document_json(identity: &Identity, pending_time: SystemTime) -> io::Result<String> {
    serde_json::to_string_pretty(&identity.document(pending_time)).map_err(io::Error::other)
}

/// State shared by all requests to one endpoint.
#[derive(Debug)]
struct Shared {
    /// What the endpoint reports.
    identity: Identity,
    /// The identity document, rendered once: it must not change between
    /// calls, `pendingTime` included.
    document: String,
    /// Issued tokens and when each expires. Expired ones are dropped whenever a
    /// new one is issued, so the map stays as small as the live sessions.
    tokens: Mutex<HashMap<String, Instant>>,
}

impl Shared {
    fn issue_token(&self, ttl: Duration) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill(&mut bytes[..]);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|_, expires| *expires > now);
        tokens.insert(token.clone(), now + ttl);
        token
    }

    fn token_is_valid(&self, token: &str) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(token)
            .is_some_and(|expires| *expires > Instant::now())
    }

    /// Every leaf under `/latest/`, path and value.
    fn leaves(&self) -> Vec<(&'static str, String)> {
        let id = &self.identity;
        vec![
            ("meta-data/ami-id", id.ami_id.clone()),
            ("meta-data/hostname", id.local_hostname()),
            ("meta-data/instance-id", id.instance_id.clone()),
            ("meta-data/instance-type", id.instance_type.clone()),
            ("meta-data/local-hostname", id.local_hostname()),
            ("meta-data/local-ipv4", id.local_ipv4.to_string()),
            (
                "meta-data/placement/availability-zone",
                id.availability_zone.clone(),
            ),
            ("meta-data/placement/region", id.region.clone()),
            ("dynamic/instance-identity/document", self.document.clone()),
        ]
    }

    /// The body for `path` (relative to `/latest/`): a leaf's value, or a
    /// directory's listing. `None` when there is no such resource.
    fn resolve(&self, path: &str) -> Option<String> {
        let leaves = self.leaves();
        if let Some((_, value)) = leaves.iter().find(|(leaf, _)| *leaf == path) {
            return Some(value.clone());
        }
        let dir = path.trim_end_matches('/');
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut entries: Vec<String> = leaves
            .iter()
            .filter_map(|(leaf, _)| leaf.strip_prefix(prefix.as_str()))
            .map(|rest| match rest.split_once('/') {
                Some((child, _)) => format!("{child}/"),
                None => rest.to_owned(),
            })
            .collect();
        entries.sort();
        entries.dedup();
        (!entries.is_empty()).then(|| entries.join("\n"))
    }
}

/// Why a request is refused, and the status IMDS answers with.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// A request that came through a proxy (`X-Forwarded-For`).
    #[error("forbidden: requests through a proxy (X-Forwarded-For) are refused")]
    Forwarded,
    /// A token `PUT` to a path other than `/latest/api/token`.
    #[error("forbidden: tokens are issued at /latest/api/token only")]
    VersionedTokenPath,
    /// The token `PUT` has no usable TTL header.
    #[error("missing or invalid parameters: {TTL_HEADER} must be 1 to {MAX_TTL_SECONDS}")]
    BadTtl,
    /// A `GET` without a token, or with one that is unknown or expired.
    #[error("unauthorized: a valid {TOKEN_HEADER} is required")]
    Unauthorized,
    /// No resource at that path.
    #[error("not found")]
    NotFound,
    /// A method IMDS does not serve at that path.
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Forwarded | Self::VersionedTokenPath => StatusCode::FORBIDDEN,
            Self::BadTtl => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        };
        let mut response = text(status, format!("{self}\n"));
        if matches!(self, Self::MethodNotAllowed) {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT"));
        }
        response
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Every request lands here: IMDS checks apply across paths, so one function
/// reads better than a router plus layers.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    let result = respond(&shared, &method, path, &headers);
    match &result {
        Ok(_) => debug!(%method, path, "IMDS request served."),
        Err(refusal) => debug!(%method, path, %refusal, "IMDS request refused."),
    }
    result.unwrap_or_else(IntoResponse::into_response)
}

fn respond(
    shared: &Shared,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    if headers.contains_key("x-forwarded-for") {
        return Err(Refusal::Forwarded);
    }
    if method == Method::PUT {
        if path != "/latest/api/token" {
            return Err(if path.ends_with("/api/token") {
                Refusal::VersionedTokenPath
            } else {
                Refusal::MethodNotAllowed
            });
        }
        let ttl = headers
            .get(TTL_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|ttl| (1..=MAX_TTL_SECONDS).contains(ttl))
            .ok_or(Refusal::BadTtl)?;
        let token = shared.issue_token(Duration::from_secs(u64::from(ttl)));
        let mut response = text(StatusCode::OK, token);
        response
            .headers_mut()
            .insert(TTL_HEADER, HeaderValue::from(ttl));
        return Ok(response);
    }
    if method != Method::GET && method != Method::HEAD {
        return Err(Refusal::MethodNotAllowed);
    }
    let token = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(Refusal::Unauthorized)?;
    if !shared.token_is_valid(token) {
        return Err(Refusal::Unauthorized);
    }
    if path == "/" {
        return Ok(text(StatusCode::OK, "latest".to_owned()));
    }
    let relative = path
        .strip_prefix("/latest/")
        .or_else(|| (path == "/latest").then_some(""))
        .ok_or(Refusal::NotFound)?;
    let body = shared.resolve(relative).ok_or(Refusal::NotFound)?;
    Ok(text(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        let identity = Identity {
            instance_id: "i-0123456789abcdef0".into(),
            ami_id: "ami-12345678".into(),
            availability_zone: "eu-west-1b".into(),
            region: "eu-west-1".into(),
            local_ipv4: Ipv4Addr::new(127, 0, 0, 7),
            instance_type: "t3.micro".into(),
            account_id: "123456789012".into(),
        };
        Shared {
            document: document_json(&identity, SystemTime::UNIX_EPOCH).expect("serialisable"),
            identity,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn resolves_leaves_and_lists_directories() {
        let s = shared();
        assert_eq!(
            s.resolve("meta-data/instance-id").as_deref(),
            Some("i-0123456789abcdef0")
        );
        assert_eq!(
            s.resolve("meta-data/placement/").as_deref(),
            Some("availability-zone\nregion")
        );
        assert_eq!(
            s.resolve("meta-data/placement").as_deref(),
            Some("availability-zone\nregion")
        );
        assert_eq!(s.resolve("").as_deref(), Some("dynamic/\nmeta-data/"));
        assert_eq!(s.resolve("dynamic/").as_deref(), Some("instance-identity/"));
        assert_eq!(s.resolve("meta-data/instance-id/"), None);
        assert_eq!(s.resolve("meta-data/nope"), None);
        assert_eq!(s.resolve("meta-dat"), None);
    }

    #[test]
    fn hostname_follows_ec2_naming() {
        let s = shared();
        assert_eq!(
            s.identity.local_hostname(),
            "ip-127-0-0-7.eu-west-1.compute.internal"
        );
        let mut east = s.identity.clone();
        east.region = "us-east-1".into();
        assert_eq!(east.local_hostname(), "ip-127-0-0-7.ec2.internal");
    }

    #[test]
    fn document_has_the_documented_shape() {
        let s = shared();
        let doc: serde_json::Value = serde_json::from_str(&s.document).expect("JSON document");
        assert_eq!(doc["pendingTime"], "1970-01-01T00:00:00Z");
        assert_eq!(doc["version"], DOCUMENT_VERSION);
        assert!(doc["kernelId"].is_null());
        assert!(doc["devpayProductCodes"].is_null());
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_expire_after_their_ttl() {
        let s = shared();
        let token = s.issue_token(Duration::from_secs(2));
        assert!(s.token_is_valid(&token));
        assert!(!s.token_is_valid("made-up"));
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(s.token_is_valid(&token));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!s.token_is_valid(&token));
        // Issuing another prunes the expired one.
        let _ = s.issue_token(Duration::from_secs(1));
        assert_eq!(s.tokens.lock().expect("not poisoned").len(), 1);
    }
}

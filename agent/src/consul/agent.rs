//! Agent-local endpoints: the node's own services, checks and maintenance.
//!
//! These calls go to the Consul agent on the same node (the rollgate agent's
//! `consul.address`); they are not forwarded to the servers, so they work even
//! while the cluster has no leader.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::types::{AgentSelf, AgentService, CheckStatus, HealthCheck, ServiceRegistration};
use super::{Client, Error, QueryOptions, Response, decode, path_segment, status_error};

/// Consul's verdict on one service of the local agent, from its checks and
/// its node's (`AggregatedStatus`: maintenance > critical > warning >
/// passing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregatedStatus {
    /// Every check passes (or there are none).
    Passing,
    /// At least one check warns, none fails.
    Warning,
    /// At least one check fails.
    Critical,
    /// The service or its node is in maintenance mode (draining).
    Maintenance,
    /// A word this client does not know (a newer Consul); not passing.
    Other,
}

impl AggregatedStatus {
    fn parse(word: &str) -> Self {
        match word {
            "passing" => Self::Passing,
            "warning" => Self::Warning,
            "critical" => Self::Critical,
            "maintenance" => Self::Maintenance,
            _ => Self::Other,
        }
    }

    /// The word Consul uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Maintenance => "maintenance",
            Self::Other => "unknown",
        }
    }
}

impl std::fmt::Display for AggregatedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /v1/agent/health/service/id/:id` of a service the agent knows.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalServiceHealth {
    /// The aggregated status.
    pub status: AggregatedStatus,
    /// The service's checks and its node's, as the agent holds them (the
    /// newest output, possibly not yet in the catalog).
    pub checks: Vec<HealthCheck>,
}

/// The body Consul sends with every status code of that endpoint.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceChecksInfo {
    aggregated_status: String,
    #[serde(default)]
    checks: Option<Vec<HealthCheck>>,
}

impl Client {
    /// `PUT /v1/agent/service/register?replace-existing-checks`: registers or
    /// replaces a service and its checks. Idempotent for the same body; checks
    /// no longer in the body are removed, so renaming a check leaves no ghost.
    pub async fn register_service(&self, service: &ServiceRegistration) -> Result<(), Error> {
        let body = serde_json::to_vec(service).map_err(|e| {
            Error::Config(format!("service {:?} cannot be encoded: {e}", service.id))
        })?;
        self.write(
            Method::PUT,
            "/v1/agent/service/register",
            &[("replace-existing-checks", "true".into())],
            Some(body),
        )
        .await
        .map(drop)
    }

    /// `PUT /v1/agent/service/deregister/:id`.
    pub async fn deregister_service(&self, service_id: &str) -> Result<(), Error> {
        let path = format!(
            "/v1/agent/service/deregister/{}",
            path_segment(service_id, false)
        );
        self.write(Method::PUT, &path, &[], None).await.map(drop)
    }

    /// `PUT /v1/agent/check/update/:id`: sets a TTL check's status and output
    /// (and resets its TTL).
    pub async fn update_check(
        &self,
        check_id: &str,
        status: CheckStatus,
        output: &str,
    ) -> Result<(), Error> {
        let path = format!("/v1/agent/check/update/{}", path_segment(check_id, false));
        let body = serde_json::json!({ "Status": status.as_str(), "Output": output });
        self.write(Method::PUT, &path, &[], Some(body.to_string().into_bytes()))
            .await
            .map(drop)
    }

    /// `PUT /v1/agent/check/pass|warn|fail/:id?note=`.
    pub async fn set_check(
        &self,
        check_id: &str,
        status: CheckStatus,
        note: &str,
    ) -> Result<(), Error> {
        let verb = match status {
            CheckStatus::Passing => "pass",
            CheckStatus::Warning => "warn",
            _ => "fail",
        };
        let path = format!("/v1/agent/check/{verb}/{}", path_segment(check_id, false));
        let params = if note.is_empty() {
            vec![]
        } else {
            vec![("note", note.to_string())]
        };
        self.write(Method::PUT, &path, &params, None)
            .await
            .map(drop)
    }

    /// `PUT /v1/agent/service/maintenance/:id?enable=&reason=`: maintenance
    /// adds a critical check, so the instance leaves `?passing` answers (and
    /// load balancers) at once.
    pub async fn service_maintenance(
        &self,
        service_id: &str,
        enable: bool,
        reason: &str,
    ) -> Result<(), Error> {
        let path = format!(
            "/v1/agent/service/maintenance/{}",
            path_segment(service_id, false)
        );
        let mut params = vec![("enable", enable.to_string())];
        if !reason.is_empty() {
            params.push(("reason", reason.to_string()));
        }
        self.write(Method::PUT, &path, &params, None)
            .await
            .map(drop)
    }

    /// `GET /v1/agent/self`.
    pub async fn agent_self(&self) -> Result<AgentSelf, Error> {
        let r: Response<AgentSelf> = self
            .read("/v1/agent/self", &[], &QueryOptions::default())
            .await?;
        Ok(r.value)
    }

    /// `GET /v1/agent/services`: the services registered with this agent.
    pub async fn agent_services(&self) -> Result<BTreeMap<String, AgentService>, Error> {
        let r = self
            .read("/v1/agent/services", &[], &QueryOptions::default())
            .await?;
        Ok(r.value)
    }

    /// `GET /v1/agent/service/:id`, `None` when the agent does not know it.
    /// Blocks on the content hash when `opts.hash` is set.
    pub async fn agent_service(
        &self,
        service_id: &str,
        opts: &QueryOptions,
    ) -> Result<Response<Option<AgentService>>, Error> {
        let path = format!("/v1/agent/service/{}", path_segment(service_id, false));
        self.read_optional(&path, &[], opts).await
    }

    /// `GET /v1/agent/checks`: this agent's checks by ID.
    pub async fn agent_checks(&self) -> Result<BTreeMap<String, HealthCheck>, Error> {
        let r = self
            .read("/v1/agent/checks", &[], &QueryOptions::default())
            .await?;
        Ok(r.value)
    }

    /// `GET /v1/agent/health/service/id/:id`: the local agent's verdict on
    /// one of its services, from the agent's own state (works without a
    /// cluster leader). Consul puts the verdict in the status code (200
    /// passing, 429 warning, 503 critical or maintenance) and the details in
    /// the body; all three are answers here. `None` when the agent does not
    /// know the service (404). Needs `service:read`.
    pub async fn agent_service_health(
        &self,
        service_id: &str,
    ) -> Result<Option<LocalServiceHealth>, Error> {
        let path = format!(
            "/v1/agent/health/service/id/{}",
            path_segment(service_id, false)
        );
        let call = format!("GET {path}");
        let (status, _meta, body) = self
            .send(
                Method::GET,
                &path,
                &[],
                &QueryOptions::default(),
                None,
                &call,
            )
            .await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let info: ServiceChecksInfo = decode(&call, &body)?;
                Ok(Some(info.into()))
            }
            // Only Consul's own JSON is a verdict: a proxy's or an
            // overloaded agent's 429/503 page is an error.
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                match serde_json::from_slice::<ServiceChecksInfo>(&body) {
                    Ok(info) => Ok(Some(info.into())),
                    Err(_) => Err(status_error(&call, status, &body, self.role)),
                }
            }
            _ => Err(status_error(&call, status, &body, self.role)),
        }
    }
}

impl From<ServiceChecksInfo> for LocalServiceHealth {
    fn from(info: ServiceChecksInfo) -> Self {
        Self {
            status: AggregatedStatus::parse(&info.aggregated_status),
            checks: info.checks.unwrap_or_default(),
        }
    }
}

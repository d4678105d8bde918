//! Cluster-wide health and catalog reads. All of them can block.

use std::collections::BTreeMap;

use super::types::{HealthCheck, ServiceEntry};
use super::{Client, Error, QueryOptions, Response, path_segment};

/// Which checks `GET /v1/health/state/:state` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Every check.
    Any,
    /// Passing checks.
    Passing,
    /// Warning checks.
    Warning,
    /// Critical checks.
    Critical,
}

impl HealthState {
    fn as_str(self) -> &'static str {
        match self {
            HealthState::Any => "any",
            HealthState::Passing => "passing",
            HealthState::Warning => "warning",
            HealthState::Critical => "critical",
        }
    }
}

impl Client {
    /// `GET /v1/health/service/:service`: instances with node and checks.
    /// `passing_only` adds `?passing` (every check passing, node checks and
    /// maintenance included); `tag` filters by tag.
    pub async fn health_service(
        &self,
        service: &str,
        passing_only: bool,
        tag: Option<&str>,
        opts: &QueryOptions,
    ) -> Result<Response<Vec<ServiceEntry>>, Error> {
        let path = format!("/v1/health/service/{}", path_segment(service, false));
        let mut params = Vec::new();
        if passing_only {
            params.push(("passing", "true".to_string()));
        }
        if let Some(tag) = tag {
            params.push(("tag", tag.to_string()));
        }
        self.read(&path, &params, opts).await
    }

    /// `GET /v1/health/state/:state`: checks in that state, across the cluster.
    pub async fn health_state(
        &self,
        state: HealthState,
        opts: &QueryOptions,
    ) -> Result<Response<Vec<HealthCheck>>, Error> {
        let path = format!("/v1/health/state/{}", state.as_str());
        self.read(&path, &[], opts).await
    }

    /// `GET /v1/health/checks/:service`: the checks of a service's instances.
    pub async fn health_checks(
        &self,
        service: &str,
        opts: &QueryOptions,
    ) -> Result<Response<Vec<HealthCheck>>, Error> {
        let path = format!("/v1/health/checks/{}", path_segment(service, false));
        self.read(&path, &[], opts).await
    }

    /// `GET /v1/health/node/:node`: a node's checks (serfHealth included).
    pub async fn health_node(
        &self,
        node: &str,
        opts: &QueryOptions,
    ) -> Result<Response<Vec<HealthCheck>>, Error> {
        let path = format!("/v1/health/node/{}", path_segment(node, false));
        self.read(&path, &[], opts).await
    }

    /// `GET /v1/catalog/services`: service names and their tags.
    pub async fn catalog_services(
        &self,
        opts: &QueryOptions,
    ) -> Result<Response<BTreeMap<String, Vec<String>>>, Error> {
        self.read("/v1/catalog/services", &[], opts).await
    }
}

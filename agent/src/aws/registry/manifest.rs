//! Packer's manifest post-processor output (`packer-manifest.json`): which
//! AMIs the last build produced, in which regions, as which version.
//!
//! ```json
//! {
//!   "builds": [{
//!     "name": "web", "builder_type": "amazon-ebs", "build_time": 1714557600,
//!     "artifact_id": "eu-west-1:ami-0abc,us-east-1:ami-0def",
//!     "packer_run_uuid": "7d3f...",
//!     "custom_data": { "artifact": "acmeinc/web", "version": "1.4.0" }
//!   }],
//!   "last_run_uuid": "7d3f..."
//! }
//! ```
//!
//! The manifest accumulates builds across runs; only the builds of the last
//! run (`last_run_uuid`) count, or the last build when the manifest has no
//! run id. Parsing is pure: no AWS call.

use serde::Deserialize;

/// One AMI of the last run, in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBuild {
    /// The AWS region the AMI lives in.
    pub region: String,
    /// `ami-...`.
    pub image_id: String,
    /// The artifact version (`custom_data.version`).
    pub version: String,
    /// The artifact name (`custom_data.artifact`, or the override).
    pub artifact: String,
}

/// What is wrong with a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not JSON of the manifest's shape.
    #[error("the Packer manifest is not valid manifest JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// `builds` is missing or empty.
    #[error("the Packer manifest lists no builds; did the Packer build finish?")]
    NoBuilds,
    /// `last_run_uuid` names a run no build belongs to.
    #[error("the Packer manifest has no build of its last run {uuid} (last_run_uuid)")]
    NoBuildOfLastRun {
        /// The `last_run_uuid` value.
        uuid: String,
    },
    /// `artifact_id` is not `region:ami-id[,region:ami-id...]`.
    #[error(
        "build {build} of the Packer manifest: artifact_id {value:?} is not region:ami-id ({reason})"
    )]
    BadArtifactId {
        /// The build's `name`.
        build: String,
        /// The `artifact_id` value.
        value: String,
        /// Which part is wrong.
        reason: String,
    },
    /// `custom_data.version` is missing or empty.
    #[error(
        "build {build} of the Packer manifest has no custom_data.version; set custom_data = {{ version = ... }} \
         in the manifest post-processor"
    )]
    MissingVersion {
        /// The build's `name`.
        build: String,
    },
    /// Neither `custom_data.artifact` nor an override names the artifact.
    #[error(
        "build {build} of the Packer manifest has no custom_data.artifact, and no artifact name was given \
         (--artifact)"
    )]
    MissingArtifact {
        /// The build's `name`.
        build: String,
    },
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    builds: Vec<Build>,
    #[serde(default)]
    last_run_uuid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Build {
    #[serde(default)]
    name: String,
    #[serde(default)]
    artifact_id: String,
    #[serde(default)]
    packer_run_uuid: Option<String>,
    #[serde(default)]
    custom_data: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The AMIs of the manifest's last run, one entry per region.
/// `artifact_override` replaces `custom_data.artifact`.
pub fn parse_packer_manifest(
    json: &str,
    artifact_override: Option<&str>,
) -> Result<Vec<ManifestBuild>, ManifestError> {
    let manifest: Manifest = serde_json::from_str(json).map_err(ManifestError::NotJson)?;
    let last = manifest.builds.last().ok_or(ManifestError::NoBuilds)?;
    let builds: Vec<&Build> = match manifest.last_run_uuid.as_deref().filter(|u| !u.is_empty()) {
        Some(uuid) => {
            let of_run: Vec<&Build> = manifest
                .builds
                .iter()
                .filter(|b| b.packer_run_uuid.as_deref() == Some(uuid))
                .collect();
            if of_run.is_empty() {
                return Err(ManifestError::NoBuildOfLastRun {
                    uuid: uuid.to_owned(),
                });
            }
            of_run
        }
        None => vec![last],
    };
    let mut out = Vec::new();
    for build in builds {
        let text = |key: &str| {
            build
                .custom_data
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let version = text("version").ok_or_else(|| ManifestError::MissingVersion {
            build: build.name.clone(),
        })?;
        let artifact = artifact_override
            .or_else(|| text("artifact"))
            .ok_or_else(|| ManifestError::MissingArtifact {
                build: build.name.clone(),
            })?;
        for (region, image_id) in split_artifact_id(build)? {
            out.push(ManifestBuild {
                region,
                image_id,
                version: version.to_owned(),
                artifact: artifact.to_owned(),
            });
        }
    }
    Ok(out)
}

/// `eu-west-1:ami-0abc,us-east-1:ami-0def` into (region, AMI) pairs.
fn split_artifact_id(build: &Build) -> Result<Vec<(String, String)>, ManifestError> {
    let bad = |reason: &str| ManifestError::BadArtifactId {
        build: build.name.clone(),
        value: build.artifact_id.clone(),
        reason: reason.to_owned(),
    };
    if build.artifact_id.trim().is_empty() {
        return Err(bad("it is empty"));
    }
    build
        .artifact_id
        .split(',')
        .map(|pair| {
            let (region, ami) = pair
                .trim()
                .split_once(':')
                .ok_or_else(|| bad("no ':' in an entry"))?;
            if region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(bad(&format!("{region:?} is not a region name")));
            }
            let id_ok = ami
                .strip_prefix("ami-")
                .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()));
            if !id_ok {
                return Err(bad(&format!("{ami:?} is not an AMI id")));
            }
            Ok((region.to_owned(), ami.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests;

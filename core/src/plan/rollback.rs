//! Which version `rollgate rollback` goes back to: a version that ran
//! stable before, read from the service's plan history (the record of what
//! was rolled out and how it ended), never from the registry alone.
//!
//! A version *ran stable* when a plan targeting it succeeded, or when the
//! first plan of the history found it running (the release the service
//! started with). The last one is the most recent such version other than
//! the one the group runs now.

use std::collections::BTreeSet;
use std::fmt;

use super::{ImageRef, Millis, Plan};

/// A version that ran stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StableVersion {
    /// Its image.
    pub image: ImageRef,
    /// When it last became stable (its rollout's end; for the version the
    /// history started with, the first plan's time).
    pub since: Millis,
    /// The plan whose rollout made it stable (`None`: it ran before the
    /// first plan).
    pub plan: Option<String>,
}

/// Versions that ran stable, most recent first, one entry per image.
pub fn stable_versions(plans: &[Plan]) -> Vec<StableVersion> {
    let mut all: Vec<StableVersion> = plans
        .iter()
        .filter_map(|p| {
            let o = p.outcome.as_ref().filter(|o| o.is_success())?;
            Some(StableVersion {
                image: p.target.clone(),
                since: o.at(),
                plan: Some(p.id.clone()),
            })
        })
        .collect();
    if let Some(first) = plans
        .iter()
        .filter(|p| !p.current.image_id.is_empty())
        .min_by_key(|p| (p.created_at, p.id.clone()))
    {
        all.push(StableVersion {
            image: first.current.clone(),
            since: first.created_at,
            plan: None,
        });
    }
    all.sort_by_key(|v| std::cmp::Reverse(v.since));
    let mut seen = BTreeSet::new();
    all.retain(|v| seen.insert(v.image.image_id.clone()));
    all
}

/// Why a rollback cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackRefusal {
    /// No version other than the running one ran stable.
    NoEarlierVersion {
        /// What runs now.
        running: String,
    },
    /// `--to` names no version that ran stable.
    UnknownVersion {
        /// What was asked for.
        asked: String,
        /// The versions that did run stable, most recent first.
        known: Vec<String>,
    },
    /// The group runs that version already.
    AlreadyRunning {
        /// The version.
        version: String,
    },
    /// That version failed a rollout since; `--force` overrides.
    Failed {
        /// The version.
        version: String,
        /// Its image.
        image_id: String,
    },
}

impl fmt::Display for RollbackRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackRefusal::NoEarlierVersion { running } => write!(
                f,
                "no earlier version ran stable (the history knows only {running}); nothing to roll back to"
            ),
            RollbackRefusal::UnknownVersion { asked, known } => write!(
                f,
                "version {asked} never ran stable here; versions that did, most recent first: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
            RollbackRefusal::AlreadyRunning { version } => {
                write!(f, "the group runs {version} already")
            }
            RollbackRefusal::Failed { version, image_id } => write!(
                f,
                "version {version} (image {image_id}) failed a rollout since it was stable; \
                 add --force to roll back to it anyway, or choose another with --to"
            ),
        }
    }
}

fn label(image: &ImageRef) -> String {
    if image.version.is_empty() {
        image.image_id.clone()
    } else {
        image.version.clone()
    }
}

/// The version to roll back to: `to` (a version or an AMI ID) if given,
/// else the last stable version other than the running image. A version
/// that failed a rollout is refused unless `force`.
pub fn rollback_target(
    plans: &[Plan],
    running_image: &str,
    failed: &BTreeSet<String>,
    to: Option<&str>,
    force: bool,
) -> Result<StableVersion, RollbackRefusal> {
    let stable = stable_versions(plans);
    let chosen = match to {
        Some(asked) => {
            let found = stable
                .iter()
                .find(|v| v.image.version == asked || v.image.image_id == asked)
                .ok_or_else(|| RollbackRefusal::UnknownVersion {
                    asked: asked.to_owned(),
                    known: stable.iter().map(|v| label(&v.image)).collect(),
                })?;
            if found.image.image_id == running_image {
                return Err(RollbackRefusal::AlreadyRunning {
                    version: label(&found.image),
                });
            }
            found
        }
        None => stable
            .iter()
            .find(|v| v.image.image_id != running_image)
            .ok_or_else(|| RollbackRefusal::NoEarlierVersion {
                running: stable
                    .first()
                    .map(|v| label(&v.image))
                    .unwrap_or_else(|| running_image.to_owned()),
            })?,
    };
    if failed.contains(&chosen.image.image_id) && !force {
        return Err(RollbackRefusal::Failed {
            version: label(&chosen.image),
            image_id: chosen.image.image_id.clone(),
        });
    }
    Ok(chosen.clone())
}

//! `rollgate rollback SERVICE [--to VERSION] [--force]`: a plan back to a
//! version that ran stable before, through the same approval and gated
//! rollout as a new image.
//!
//! The version comes from the service's plan history
//! (`plan::rollback_target`): the last stable version other than the one
//! running, or the one `--to` names (a version or an AMI ID). A version that
//! failed a rollout since is refused, named, unless `--force`. The plan is
//! recorded as a rollback (`Change::Rollback`, who asked); from then on the
//! planner skips the images newer than the target until a new image is
//! published (or one of them is published again): see `plan::decide`.

use super::{OpsError, aws, one_service, service_config, store};
use crate::aws::registry::Registry;
use crate::config::Config;
use crate::coordinator::planner::{make_plan, observe, store_plan};
use crate::rollout::plan::{self, Change, Plan, now_ms};
use crate::rollout::render;

/// `rollgate rollback`: plans the change back; answers the plan as
/// operators read it.
pub async fn rollback(
    config: &Config,
    service: Option<&str>,
    to: Option<&str>,
    force: bool,
    by: String,
) -> Result<String, OpsError> {
    let name = one_service(config, service)?;
    let svc = service_config(config, name)?;
    let store = store(config)?;
    let fleet = aws(config).await;
    let registry = fleet
        .registry()
        .with_owners(config.coordinator.image_owners.clone());
    let plans: Vec<Plan> = store
        .plans(name)
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let failed = store.failed_images(name).await?;
    let seen = observe(&fleet, svc).await?;
    let running = seen.running_image().to_owned();
    let refused = |reason: String| OpsError::RollbackRefused {
        service: name.to_owned(),
        reason,
    };
    let chosen = plan::rollback_target(&plans, &running, &failed, to, force)
        .map_err(|r| refused(r.to_string()))?;
    let now = now_ms();
    let target_id = &chosen.image.image_id;
    if let Some(p) = plans
        .iter()
        .find(|p| p.target.image_id == *target_id && (p.is_pending(now) || p.is_open_approved()))
    {
        return Ok(format!(
            "Plan {} ({}) already goes to {} ({target_id}); nothing new. `rollgate plan {name}` shows it.",
            p.id,
            render::decision(&p.decision),
            chosen.image.version
        ));
    }
    let Some(mut image) = registry.describe_image(target_id).await? else {
        return Err(refused(format!(
            "image {target_id} of version {} no longer exists in EC2 (deregistered?)",
            chosen.image.version
        )));
    };
    // The history's name for it, whatever its tags say now.
    image.version = Some(chosen.image.version.clone());
    if !chosen.image.artifact.is_empty() {
        image.artifact = Some(chosen.image.artifact.clone());
    }
    let current = registry.describe_image(&running).await.ok().flatten();
    let id = store.next_plan_id(name).await?;
    let change = Change::Rollback {
        requested_by: by.clone(),
        override_failed: failed.contains(target_id),
    };
    let plan = make_plan(svc, id, &seen, current.as_ref(), &image, change, now);
    let supersede: Vec<String> = plans
        .iter()
        .filter(|p| p.is_pending(now))
        .map(|p| p.id.clone())
        .collect();
    let Some(plan) = store_plan(&store, svc, plan, &supersede, now).await? else {
        return Err(refused(
            "another plan took the plan ID first; run the command again".into(),
        ));
    };
    tracing::info!(service = %name, plan = %plan.id, by = %by, to = %chosen.image.version,
        "Rollback planned.");
    let mut text = render::plan(&plan, super::style());
    if !supersede.is_empty() {
        text.push_str(&format!(
            "\n  It supersedes pending plan{} {}.\n",
            if supersede.len() == 1 { "" } else { "s" },
            supersede.join(", ")
        ));
    }
    text.push_str(&format!(
        "\n  The coordinator now skips every image built before this rollback, until a new image is \
         published (publishing one of them again rolls forward to it). {} is not affected.\n",
        chosen.image.version
    ));
    Ok(text)
}

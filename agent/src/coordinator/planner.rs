//! One service's planning round: read the registry and the fleet, expire and
//! supersede plans, create a plan for a new image, announce it, apply the
//! approval policy. Called by the leader on every publish trigger and every
//! `registry_poll`; safe to call any number of times (a plan for an image
//! is never created twice).

use crate::aws::registry::{Image, Registry};
use crate::aws::{self, Fleet};
use crate::consul::lock::Fence;
use crate::notify::{Event, Outbox, RolloutNotice, RolloutStage};
use crate::rollout::plan::{self, Decision, Millis, Plan, PlanInput, Verdict};
use crate::rollout::store::{Store, StoreError};

use super::config::{Approval, ServiceConfig};

/// A planning round failed; the next round tries again.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// AWS failed (the error names the call and the resource).
    #[error(transparent)]
    Aws(#[from] aws::Error),
    /// Consul KV failed.
    #[error(transparent)]
    Store(StoreError),
    /// The group is not set up as the configuration says.
    #[error("service {service}: {problem}")]
    Setup {
        /// The service.
        service: String,
        /// What does not match.
        problem: String,
    },
    /// This replica no longer holds the leader lock.
    #[error("leadership lost; not writing")]
    NotLeader,
}

impl From<StoreError> for PlanError {
    /// A fenced write refused because the lock moved on ends the round.
    fn from(e: StoreError) -> Self {
        if e.is_fence_lost() {
            PlanError::NotLeader
        } else {
            PlanError::Store(e)
        }
    }
}

/// What a round did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundResult {
    /// Nothing new, and why.
    Idle(String),
    /// A plan was created (and maybe auto-approved).
    Planned(String),
}

/// What a round works with.
#[derive(Debug)]
pub struct Planner<'a, F, R> {
    /// The service.
    pub service: &'a ServiceConfig,
    /// EC2 and Auto Scaling.
    pub fleet: &'a F,
    /// The AMI registry.
    pub registry: &'a R,
    /// KV records.
    pub store: &'a Store,
    /// Where announcements go.
    pub outbox: &'a Outbox,
    /// The leader's fence, verified before every write.
    pub fence: &'a Fence,
}

impl<F: Fleet, R: Registry> Planner<'_, F, R> {
    async fn ensure_leader(&self) -> Result<(), PlanError> {
        match self.fence.verify(self.store.client()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(PlanError::NotLeader),
            Err(e) => Err(PlanError::Store(e.into())),
        }
    }

    /// One round at `now`.
    pub async fn round(&self, now: Millis) -> Result<RoundResult, PlanError> {
        let svc = self.service;
        let plans: Vec<Plan> = self
            .store
            .plans(&svc.name)
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        for id in plan::expired(&plans, now) {
            self.ensure_leader().await?;
            if let Ok(p) = self
                .store
                .decide(&id, Decision::Expired { at: now }, now + 1)
                .await?
            {
                tracing::info!(service = %svc.name, plan = %p.id, "Plan expired without an answer.");
            }
        }
        let Some(newest) = self.registry.newest_image(&svc.artifact).await? else {
            return Ok(RoundResult::Idle(format!(
                "artifact {} has no images yet",
                svc.artifact
            )));
        };
        let group = self.fleet.describe_group(&svc.auto_scaling_group).await?;
        let setup = |problem: String| PlanError::Setup {
            service: svc.name.clone(),
            problem,
        };
        let lt = group.launch_template.clone().ok_or_else(|| {
            setup(format!(
                "Auto Scaling group {} has no launch template (mixed instances policies and launch configurations are not supported)",
                group.name
            ))
        })?;
        if lt.id != svc.launch_template && lt.name != svc.launch_template {
            return Err(setup(format!(
                "Auto Scaling group {} uses launch template {} ({}), not {} as configured",
                group.name, lt.name, lt.id, svc.launch_template
            )));
        }
        let template = self
            .fleet
            .launch_template_version(&lt.id, &lt.version)
            .await?;
        // The rollout copies the default version (Terraform's), recorded by
        // number so a replay copies the same one.
        let default = self
            .fleet
            .launch_template_version(&lt.id, "$Default")
            .await?;
        let instances = self.fleet.describe_members(&group).await?;
        let running = template.image_id.clone().unwrap_or_default();
        let converged = instances.iter().all(|i| i.image_id == running);
        let failed = self.store.failed_images(&svc.name).await?;
        let plans: Vec<Plan> = self
            .store
            .plans(&svc.name)
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let supersede = match plan::decide(&newest, &running, converged, &plans, &failed, now) {
            Verdict::Nothing(why) => return Ok(RoundResult::Idle(why)),
            Verdict::Plan { supersede } => supersede,
        };
        self.ensure_leader().await?;
        let id = self.store.next_plan_id(&svc.name).await?;
        let current_image = self.registry.describe_image(&running).await.ok().flatten();
        let template = template.view();
        let plan = plan::compute(&PlanInput {
            service: svc.plan_settings(),
            id: id.clone(),
            group: &group,
            instances: &instances,
            template: &template,
            default_template_version: default.version_number,
            current_image: current_image.as_ref(),
            target: &newest,
            now,
        });
        if !self.store.create_plan(&plan).await? {
            return Ok(RoundResult::Idle(format!("plan {id} exists already")));
        }
        tracing::info!(service = %svc.name, plan = %id, from = %plan.current.image_id,
            to = %plan.target.image_id, version = %plan.target.version,
            replace = plan.to_replace().count(), "Plan created.");
        for old in supersede {
            let by = Decision::Superseded {
                by_plan: id.clone(),
                at: now,
            };
            if let Ok(p) = self.store.decide(&old, by, now).await? {
                tracing::info!(service = %svc.name, plan = %p.id, by = %id, "Plan superseded by a newer image.");
            }
        }
        self.announce(&plan, &newest).await;
        if svc.approval == Approval::Auto {
            let approved = Decision::Approved {
                by: "policy:auto".into(),
                at: now,
            };
            if self.store.decide(&id, approved, now).await?.is_ok() {
                tracing::info!(service = %svc.name, plan = %id, "Plan approved by policy (approval = \"auto\").");
            }
        }
        Ok(RoundResult::Planned(id))
    }

    /// Enqueues the "pending approval" notice; a failure is logged, not
    /// fatal (the plan is stored; the notice can be re-announced).
    async fn announce(&self, plan: &Plan, target: &Image) {
        let notice = RolloutNotice {
            rollout_id: plan.id.clone(),
            stage: Some(RolloutStage::PendingApproval),
            service: plan.service.clone(),
            group: plan.group.clone(),
            old_version: plan.current.version.clone(),
            new_version: target.version.clone().unwrap_or_default(),
            old_ami: plan.current.image_id.clone(),
            new_ami: plan.target.image_id.clone(),
            plan: format!(
                "{} of {} instances to replace in {} steps, about {}; approve with `rollgate approve {}`",
                plan.to_replace().count(),
                plan.instances.len(),
                plan.batches,
                humantime::format_duration(plan.estimate),
                plan.id
            ),
            reason: String::new(),
            batch: None,
            batches: Some(plan.batches),
            ordinal: None,
        };
        let event = Event::rollout(notice, vec![], plan.created_at);
        if let Err(e) = self.outbox.enqueue(event).await {
            tracing::warn!(plan = %plan.id, error = %e, "Cannot enqueue the plan announcement.");
        }
    }
}

//! One service's planning round: read the registry and the fleet, expire and
//! supersede plans, create a plan for a new image (or for a Terraform-only
//! change of the launch template), announce it, apply the approval policy.
//! Called by the leader on every publish trigger and every `registry_poll`;
//! safe to call any number of times (a plan for an image is never created
//! twice).
//!
//! What to plan is decided by the pure `plan::decide` (and
//! `plan::decide_template`); `rollgate publish` asks `plan::decide_publish`
//! with the same inputs, observed the same way ([`observe`]), so the command
//! line never promises what this round will not do. Operator commands that
//! create plans themselves (`rollback`, `publish --force`) store them with
//! [`store_plan`], the same path as a round's plans.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::aws::registry::{Image, Registry};
use crate::aws::{self, Fleet};
use crate::consul::lock::Fence;
use crate::notify::{Event, Outbox, RolloutNotice, RolloutStage};
use crate::rollout::plan::{
    self, Change, Decision, Ignored, ImageRef, Millis, Plan, PlanInput, Published, Situation,
    Verdict,
};
use crate::rollout::store::{Store, StoreError, Trigger};
use rollgate_core::fleet::{Group, Instance, TemplateVersion};

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

/// What the planner observes of a service's group: the group, the launch
/// template version it points at, the template's default version, and the
/// instances. `rollgate publish` and `rollback` observe the same way.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The Auto Scaling group.
    pub group: Group,
    /// The launch template version the group points at.
    pub template: TemplateVersion,
    /// The number of the template's default version (Terraform's).
    pub default_version: i64,
    /// The group's instances (DescribeInstances).
    pub instances: Vec<Instance>,
}

impl Observation {
    /// The image the group's template version launches.
    pub fn running_image(&self) -> &str {
        self.template.image_id.as_deref().unwrap_or_default()
    }

    /// Whether every instance runs [`running_image`](Self::running_image).
    pub fn converged(&self) -> bool {
        let running = self.running_image();
        self.instances.iter().all(|i| i.image_id == running)
    }
}

/// Observes `service`'s group, checking it is set up as configured.
pub async fn observe<F: Fleet>(fleet: &F, svc: &ServiceConfig) -> Result<Observation, PlanError> {
    let group = fleet.describe_group(&svc.auto_scaling_group).await?;
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
    let template = fleet.launch_template_version(&lt.id, &lt.version).await?;
    // The rollout copies the default version (Terraform's), recorded by
    // number so a replay copies the same one.
    let default = fleet.launch_template_version(&lt.id, "$Default").await?;
    let instances = fleet.describe_members(&group).await?;
    Ok(Observation {
        template: template.view(),
        default_version: default.version_number,
        group,
        instances,
    })
}

/// The plan for `target` with `change`, from what was observed.
pub fn make_plan(
    svc: &ServiceConfig,
    id: String,
    seen: &Observation,
    current_image: Option<&Image>,
    target: &Image,
    change: Change,
    now: Millis,
) -> Plan {
    plan::compute(&PlanInput {
        service: svc.plan_settings(),
        id,
        group: &seen.group,
        instances: &seen.instances,
        template: &seen.template,
        default_template_version: seen.default_version,
        current_image,
        target,
        change,
        now,
    })
}

/// Stores a new plan, marks `supersede` superseded by it, and approves it
/// when the service's policy is `approval = "auto"`. Answers the plan as
/// stored (with the policy's approval), or `None` when a plan with its ID
/// exists already.
pub async fn store_plan(
    store: &Store,
    svc: &ServiceConfig,
    mut plan: Plan,
    supersede: &[String],
    now: Millis,
) -> Result<Option<Plan>, StoreError> {
    if !store.create_plan(&plan).await? {
        return Ok(None);
    }
    tracing::info!(service = %svc.name, plan = %plan.id, change = plan.change.word(),
        from = %plan.current.image_id, to = %plan.target.image_id, version = %plan.target.version,
        replace = plan.to_replace().count(), "Plan created.");
    for old in supersede {
        let by = Decision::Superseded {
            by_plan: plan.id.clone(),
            at: now,
        };
        if let Ok(p) = store.decide(old, by, now).await? {
            tracing::info!(service = %svc.name, plan = %p.id, by = %plan.id, "Plan superseded by a newer one.");
        }
    }
    if svc.approval == Approval::Auto {
        let approved = Decision::Approved {
            by: "policy:auto".into(),
            at: now,
        };
        if let Ok(p) = store.decide(&plan.id, approved, now).await? {
            tracing::info!(service = %svc.name, plan = %plan.id, "Plan approved by policy (approval = \"auto\").");
            plan = p;
        }
    }
    Ok(Some(plan))
}

/// An image as the registry would describe it, for an image it does not
/// describe (deregistered, or not an artifact).
fn bare_image(image_id: &str) -> Image {
    Image {
        image_id: image_id.to_owned(),
        name: String::new(),
        artifact: None,
        version: None,
        state: "available".into(),
        creation_date: None,
        tags: BTreeMap::new(),
    }
}

/// Whether this process has not yet logged that the publish at `at` of
/// `service` is ignored (one line per publish, not one per round).
fn first_report(service: &str, at: Millis) -> bool {
    static REPORTED: Mutex<BTreeMap<String, Millis>> = Mutex::new(BTreeMap::new());
    let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    reported.insert(service.to_owned(), at) != Some(at)
}

impl<F: Fleet, R: Registry> Planner<'_, F, R> {
    async fn ensure_leader(&self) -> Result<(), PlanError> {
        match self.fence.verify(self.store.client()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(PlanError::NotLeader),
            Err(e) => Err(PlanError::Store(e.into())),
        }
    }

    async fn plans(&self) -> Result<Vec<Plan>, PlanError> {
        Ok(self
            .store
            .plans(&self.service.name)
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    /// One round at `now`.
    pub async fn round(&self, now: Millis) -> Result<RoundResult, PlanError> {
        let svc = self.service;
        for id in plan::expired(&self.plans().await?, now) {
            self.ensure_leader().await?;
            if let Ok(p) = self
                .store
                .decide(&id, Decision::Expired { at: now }, now + 1)
                .await?
            {
                tracing::info!(service = %svc.name, plan = %p.id, "Plan expired without an answer.");
            }
        }
        // Plans stored by an operator's command (`rollgate rollback`,
        // `publish --force`) are announced here: an operator's token may not
        // write the outbox. The outbox writes an event once (create-only),
        // so a plan this planner announced already is not announced again.
        for pending in self.plans().await?.iter().filter(|p| p.is_pending(now)) {
            self.ensure_leader().await?;
            self.announce(pending).await;
        }
        let Some(newest) = self.registry.newest_image(&svc.artifact).await? else {
            return Ok(RoundResult::Idle(format!(
                "artifact {} has no images yet",
                svc.artifact
            )));
        };
        let seen = observe(self.fleet, svc).await?;
        let running = seen.running_image().to_owned();
        let failed = self.store.failed_images(&svc.name).await?;
        let plans = self.plans().await?;
        let trigger = self.store.trigger(&svc.artifact).await?;
        let situation = Situation {
            running_image: &running,
            fleet_converged: seen.converged(),
            plans: &plans,
            failed: &failed,
            published: trigger.as_ref().map(|t| Published {
                image_id: &t.image_id,
                at: t.at,
            }),
            now,
        };
        let (target, change, supersede) = match plan::decide(&newest, &situation) {
            Verdict::Plan { supersede } => (newest.clone(), Change::Image, supersede),
            Verdict::Nothing(why) => {
                if let Some(t) = &trigger {
                    self.report_ignored(t, &newest, &why, &situation);
                }
                let template = plan::decide_template(
                    &running,
                    situation.fleet_converged,
                    seen.template.version_number,
                    seen.default_version,
                    &plans,
                    now,
                );
                let Some(change) = template else {
                    return Ok(RoundResult::Idle(why.to_string()));
                };
                let image = match self.registry.describe_image(&running).await {
                    Ok(Some(image)) => image,
                    _ => bare_image(&running),
                };
                (image, change, vec![])
            }
        };
        self.ensure_leader().await?;
        let id = self.store.next_plan_id(&svc.name).await?;
        let current_image = if running == target.image_id {
            Some(target.clone())
        } else {
            self.registry.describe_image(&running).await.ok().flatten()
        };
        let plan = make_plan(
            svc,
            id.clone(),
            &seen,
            current_image.as_ref(),
            &target,
            change,
            now,
        );
        let Some(plan) = store_plan(self.store, svc, plan, &supersede, now).await? else {
            return Ok(RoundResult::Idle(format!("plan {id} exists already")));
        };
        self.announce(&plan).await;
        Ok(RoundResult::Planned(id))
    }

    /// Says, once per publish and above debug level, that the published
    /// image is not planned, why, and what to do instead.
    fn report_ignored(&self, t: &Trigger, newest: &Image, why: &Ignored, s: &Situation<'_>) {
        let svc = &self.service.name;
        let why = if t.image_id == newest.image_id {
            why.clone()
        } else {
            Ignored::NotNewest {
                image: ImageRef {
                    image_id: t.image_id.clone(),
                    version: t.version.clone(),
                    artifact: self.service.artifact.clone(),
                },
                newest: ImageRef::from_image(newest),
                newest_runs: newest.image_id == s.running_image,
            }
        };
        if why.is_on_its_way() || !first_report(svc, t.at) {
            return;
        }
        let hint = why.hint(svc).unwrap_or_default();
        tracing::warn!(service = %svc, image = %t.image_id, version = %t.version, reason = %why,
            hint = %hint, "Published image not planned.");
    }

    /// Enqueues the "pending approval" notice; a failure is logged, not
    /// fatal (the plan is stored; the notice can be re-announced).
    async fn announce(&self, plan: &Plan) {
        let notice = RolloutNotice {
            rollout_id: plan.id.clone(),
            stage: Some(RolloutStage::PendingApproval),
            service: plan.service.clone(),
            group: plan.group.clone(),
            old_version: plan.current.version.clone(),
            new_version: plan.target.version.clone(),
            old_ami: plan.current.image_id.clone(),
            new_ami: plan.target.image_id.clone(),
            plan: format!(
                "{}; {} of {} instances to replace in {} steps, about {}; approve with `rollgate approve {}`",
                crate::rollout::render::change(plan),
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

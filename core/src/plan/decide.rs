//! What the coordinator does about an image or a template change: the one
//! decision that both the planner (on every round) and `rollgate publish`
//! (before it claims anything) call, so the command line can never promise
//! what the coordinator will not do.
//!
//! The rules, in order ([`decide`]):
//!
//! 1. the group runs the image already, every instance on it: nothing;
//! 2. the image failed a rollout before (revert-loop guard): nothing, until
//!    an operator overrides (`rollgate publish --force`);
//! 3. a pending or approved-and-unfinished plan targets it: nothing more;
//! 4. a plan for it was rejected: nothing, until an operator overrides;
//! 5. a rollback was planned after the image was built, and the image was
//!    not published again since: nothing ([`Ignored::SkippedByRollback`]);
//! 6. the launch template already launches it (a rollout is under way):
//!    the rollout handles it;
//! 7. otherwise plan it, superseding pending plans for other images.
//!
//! Rule 5 is what makes a rollback stick: the images that were newer than
//! the rollback's target when it was planned are skipped until a new image
//! is published (or one of them is published again, which is how an
//! operator rolls forward on purpose).

use std::collections::BTreeSet;
use std::fmt;

use super::{Change, Decision, ImageRef, Millis, Plan};
use crate::fleet::Image;

/// Why the coordinator does not plan an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// Every instance of the group runs it already.
    AlreadyRunning {
        /// The image.
        image: ImageRef,
    },
    /// It failed a rollout before (the revert-loop guard).
    Failed {
        /// The image.
        image: ImageRef,
    },
    /// A plan still open (pending or approved, not finished) targets it.
    Covered {
        /// The image.
        image: ImageRef,
        /// The plan.
        plan: String,
        /// Its decision, as a word (`pending`, `approved`).
        state: &'static str,
    },
    /// An operator rejected a plan for exactly this image.
    Rejected {
        /// The image.
        image: ImageRef,
        /// The rejected plan.
        plan: String,
        /// Who rejected it.
        by: String,
        /// Why, as given.
        reason: String,
    },
    /// A rollback planned after this image was built, and it was not
    /// published again since.
    SkippedByRollback {
        /// The image.
        image: ImageRef,
        /// The rollback plan.
        plan: String,
        /// The version the rollback went (or goes) back to.
        target: ImageRef,
    },
    /// The launch template already launches it while some instances still
    /// run another image: the rollout under way (or resumed) handles them.
    InProgress {
        /// The image.
        image: ImageRef,
    },
    /// Another image of the artifact is newer; the coordinator only plans
    /// the newest image.
    NotNewest {
        /// The image asked about.
        image: ImageRef,
        /// The newest image of the artifact.
        newest: ImageRef,
        /// Whether the newest is what the group runs.
        newest_runs: bool,
    },
}

fn named(image: &ImageRef) -> String {
    if image.version.is_empty() {
        format!("image {}", image.image_id)
    } else {
        format!("image {} ({})", image.image_id, image.version)
    }
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::AlreadyRunning { image } => {
                write!(f, "the group already runs {} everywhere", named(image))
            }
            Ignored::Failed { image } => write!(
                f,
                "{} failed a rollout before; it is not planned again",
                named(image)
            ),
            Ignored::Covered { image, plan, state } => {
                write!(f, "plan {plan} ({state}) already covers {}", named(image))
            }
            Ignored::Rejected {
                image,
                plan,
                by,
                reason,
            } => {
                write!(f, "plan {plan} for {} was rejected by {by}", named(image))?;
                if !reason.is_empty() {
                    write!(f, " ({reason})")?;
                }
                Ok(())
            }
            Ignored::SkippedByRollback {
                image,
                plan,
                target,
            } => write!(
                f,
                "{} is skipped: rollback {plan} to {} was planned after it was built",
                named(image),
                target.version
            ),
            Ignored::InProgress { image } => write!(
                f,
                "the launch template already launches {}; the rollout under way replaces the rest",
                named(image)
            ),
            Ignored::NotNewest {
                image,
                newest,
                newest_runs,
            } => write!(
                f,
                "{} is older than {}, which {}; the coordinator plans only the newest image of an artifact",
                named(image),
                named(newest),
                if *newest_runs {
                    "the group runs"
                } else {
                    "is the newest"
                }
            ),
        }
    }
}

impl Ignored {
    /// Whether the image will run anyway (already running, or an open plan
    /// or rollout takes it there): asking again is not a failure.
    pub fn is_on_its_way(&self) -> bool {
        matches!(
            self,
            Ignored::AlreadyRunning { .. } | Ignored::Covered { .. } | Ignored::InProgress { .. }
        )
    }

    /// What an operator can do instead, as commands for `service`.
    pub fn hint(&self, service: &str) -> Option<String> {
        match self {
            Ignored::Failed { image } | Ignored::Rejected { image, .. } => Some(format!(
                "to plan it anyway, an operator runs `rollgate publish --artifact {} --ami {} --version {} --force`",
                image.artifact, image.image_id, image.version
            )),
            Ignored::NotNewest { image, .. } => Some(format!(
                "to go back to {}, run `rollgate rollback {service} --to {}` (it must have run stable before); \
                 to ship this build as new, publish it under a new version",
                image.version, image.version
            )),
            Ignored::SkippedByRollback { image, .. } => Some(format!(
                "publish it again (`rollgate publish --artifact {} --ami {} --version {}`) to roll forward to it",
                image.artifact, image.image_id, image.version
            )),
            Ignored::AlreadyRunning { .. }
            | Ignored::Covered { .. }
            | Ignored::InProgress { .. } => None,
        }
    }
}

/// What the planner should do about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do, and why.
    Nothing(Ignored),
    /// Plan the image, superseding these pending plans.
    Plan {
        /// Pending plans for another image, to mark superseded.
        supersede: Vec<String>,
    },
}

/// The last `rollgate publish` of the artifact, as the trigger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published<'a> {
    /// The image published.
    pub image_id: &'a str,
    /// When.
    pub at: Millis,
}

/// What the decision looks at besides the image: the service's state.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// The image of the launch template version the group points at.
    pub running_image: &'a str,
    /// Whether every instance of the group runs `running_image`.
    pub fleet_converged: bool,
    /// The service's plans, any order.
    pub plans: &'a [Plan],
    /// Images that failed a rollout of the service.
    pub failed: &'a BTreeSet<String>,
    /// The artifact's last publish, if any.
    pub published: Option<Published<'a>>,
    /// Now.
    pub now: Millis,
}

/// Milliseconds since the epoch of an image's creation date (0 when
/// unknown: an image of unknown age counts as old).
fn created_ms(image: &Image) -> Millis {
    image
        .creation_date
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// The rollback plan that skips `image`, if any: the latest rollback plan
/// that was not turned down (rejected, expired, superseded), planned after
/// the image was built, with no publish of the image since.
fn skipping_rollback<'p>(image: &Image, s: &Situation<'p>) -> Option<&'p Plan> {
    let rollback = s
        .plans
        .iter()
        .filter(|p| matches!(p.change, Change::Rollback { .. }))
        .filter(|p| {
            matches!(
                p.decision,
                Decision::Pending { .. } | Decision::Approved { .. }
            )
        })
        .max_by_key(|p| p.created_at)?;
    if created_ms(image) >= rollback.created_at || rollback.target.image_id == image.image_id {
        return None;
    }
    let republished = s
        .published
        .is_some_and(|p| p.image_id == image.image_id && p.at > rollback.created_at);
    (!republished).then_some(rollback)
}

/// Decides what to do about `image`, the newest image of the artifact (see
/// the module documentation for the rules).
pub fn decide(image: &Image, s: &Situation<'_>) -> Verdict {
    let me = ImageRef::from_image(image);
    let nothing = Verdict::Nothing;
    if image.image_id == s.running_image && s.fleet_converged {
        return nothing(Ignored::AlreadyRunning { image: me });
    }
    if s.failed.contains(&image.image_id) {
        return nothing(Ignored::Failed { image: me });
    }
    let same_target = |p: &Plan| p.target.image_id == image.image_id;
    if let Some(p) = s
        .plans
        .iter()
        .find(|p| same_target(p) && (p.is_pending(s.now) || p.is_open_approved()))
    {
        return nothing(Ignored::Covered {
            image: me,
            plan: p.id.clone(),
            state: p.decision.word(),
        });
    }
    // A plan for this image that was rejected stays rejected: an operator
    // said no to exactly this image.
    if let Some((p, by, reason)) = s.plans.iter().find_map(|p| match &p.decision {
        Decision::Rejected { by, reason, .. } if same_target(p) => Some((p, by, reason)),
        _ => None,
    }) {
        return nothing(Ignored::Rejected {
            image: me,
            plan: p.id.clone(),
            by: by.clone(),
            reason: reason.clone(),
        });
    }
    if let Some(r) = skipping_rollback(image, s) {
        return nothing(Ignored::SkippedByRollback {
            image: me,
            plan: r.id.clone(),
            target: r.target.clone(),
        });
    }
    if image.image_id == s.running_image {
        return nothing(Ignored::InProgress { image: me });
    }
    let supersede = s
        .plans
        .iter()
        .filter(|p| p.is_pending(s.now) && !same_target(p))
        .map(|p| p.id.clone())
        .collect();
    Verdict::Plan { supersede }
}

/// What the coordinator will do once `published` is published, given the
/// newest image of the artifact counting `published` as tagged: `decide`
/// about it when it is the newest, else nothing ([`Ignored::NotNewest`]).
/// The situation's `published` should be this publish.
pub fn decide_publish(published: &Image, newest: &Image, s: &Situation<'_>) -> Verdict {
    if newest.image_id != published.image_id {
        return Verdict::Nothing(Ignored::NotNewest {
            image: ImageRef::from_image(published),
            newest: ImageRef::from_image(newest),
            newest_runs: newest.image_id == s.running_image,
        });
    }
    decide(published, s)
}

/// The launch template version the running instances' version was copied
/// from: the base of the last successful plan that brought the running
/// image (or, for plans recorded before the base was, the version it
/// replaced), else the version the group points at (set by Terraform, not
/// by a rollout).
pub fn running_base(plans: &[Plan], running_image: &str, current_version: i64) -> i64 {
    plans
        .iter()
        .filter(|p| p.target.image_id == running_image)
        .filter_map(|p| match &p.outcome {
            Some(o) if o.is_success() => Some((o.at(), p)),
            _ => None,
        })
        .max_by_key(|(at, _)| *at)
        .map(|(_, p)| match p.change {
            Change::Template { to_version, .. } => to_version,
            _ => p
                .base_template_version
                .unwrap_or(p.current_template_version),
        })
        .unwrap_or(current_version)
}

/// Whether a Terraform-only change is due: the template's default version
/// is newer than the base the running instances came from, the image
/// stays, every instance runs it, and no plan is open. A template change to
/// the same default version that was rejected or did not succeed is not
/// planned again (apply a new template version to try again).
pub fn decide_template(
    running_image: &str,
    fleet_converged: bool,
    current_version: i64,
    default_version: i64,
    plans: &[Plan],
    now: Millis,
) -> Option<Change> {
    if running_image.is_empty() || !fleet_converged {
        return None;
    }
    if plans
        .iter()
        .any(|p| p.is_pending(now) || p.is_open_approved())
    {
        return None;
    }
    let from = running_base(plans, running_image, current_version);
    if default_version <= from {
        return None;
    }
    let tried = plans.iter().any(|p| {
        matches!(p.change, Change::Template { to_version, .. } if to_version == default_version)
            && p.target.image_id == running_image
            && (matches!(p.decision, Decision::Rejected { .. })
                || p.outcome.as_ref().is_some_and(|o| !o.is_success()))
    });
    (!tried).then_some(Change::Template {
        from_version: from,
        to_version: default_version,
    })
}

//! Operator commands: `publish` ([`publish`]), `rollback` ([`rollback`]),
//! `plan`, `history`, `approve`, `reject`, `status`, `pause`, `resume`,
//! `abort`, `promote`.
//!
//! Each reads the configuration's Consul and AWS settings, does one thing,
//! and reports in words an operator can act on. A failure is an [`OpsError`]
//! whose variant says what kind it is: bad input (an unknown service, an
//! unreadable manifest), a refusal by the current state (a plan already
//! decided or expired, no rollout in progress), or Consul, KV or AWS
//! failing; `main.rs` chooses the exit status from it.

mod publish;
mod rollback;

use std::io::IsTerminal as _;

use crate::aws::registry::manifest::ManifestError;
use crate::aws::sdk::SdkFleet;
use crate::config::Config;
use crate::consul::Client;
use crate::coordinator::config::ServiceConfig;
use crate::coordinator::planner::PlanError;
use crate::rollout::plan::{Decision, Outcome, Plan, now_ms};
use crate::rollout::render::{self, Style};
use crate::rollout::store::{Store, StoreError};

pub use publish::{PublishOptions, PublishSource, publish};
pub use rollback::rollback;

/// An operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Consul could not be used (or the client could not be built).
    #[error(transparent)]
    Consul(#[from] crate::consul::Error),
    /// A KV record could not be read or written, or names no plan.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// AWS failed, or the image to publish does not exist.
    #[error(transparent)]
    Aws(#[from] crate::aws::Error),
    /// The command names a service that `[[services]]` does not configure.
    #[error("no service {service:?} in [[services]] (configured: {})", configured.join(", "))]
    UnknownService {
        /// The service named.
        service: String,
        /// The configured services.
        configured: Vec<String>,
    },
    /// No service was named and none is configured.
    #[error("no [[services]] configured; name the service")]
    NoServices,
    /// No service was named and several are configured.
    #[error("several services are configured ({}); name one", configured.join(", "))]
    AmbiguousService {
        /// The configured services.
        configured: Vec<String>,
    },
    /// The Packer manifest could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a usable Packer manifest.
    #[error("{path}: {source}")]
    Manifest {
        /// The file.
        path: String,
        /// What is wrong with it.
        #[source]
        source: ManifestError,
    },
    /// The plan is no longer pending: decided, or expired unanswered.
    #[error(
        "plan {plan} cannot be decided: it is {state}. `rollgate plan {service}` shows the current plan."
    )]
    AlreadyDecided {
        /// The plan.
        plan: String,
        /// Its service.
        service: String,
        /// What it is now (`approved by alice at ...`, `expired ...`).
        state: String,
    },
    /// A pause, resume, abort or promote with no rollout to apply it to.
    #[error("no rollout in progress for {service}; `rollgate status {service}` shows the last one")]
    NoRollout {
        /// The service.
        service: String,
    },
    /// The service's group is not set up as the configuration says.
    #[error("service {service}: {problem}")]
    Setup {
        /// The service.
        service: String,
        /// What does not match.
        problem: String,
    },
    /// `publish` would change nothing the coordinator acts on (an image
    /// older than the newest, one that failed or was rejected before), so
    /// it changed nothing; the message says why and what to do instead.
    #[error("{0}")]
    NotPlanned(String),
    /// `rollback` cannot go where it was asked (no such stable version, a
    /// version that failed since, the version running already).
    #[error("cannot roll {service} back: {reason}")]
    RollbackRefused {
        /// The service.
        service: String,
        /// Why, naming the version.
        reason: String,
    },
    /// `publish` failed after part of it was done: says what was done, what
    /// failed, and what will still happen.
    #[error("{done}\n{source}\n{next}")]
    PartlyDone {
        /// What was done (images tagged, in which region).
        done: String,
        /// What failed.
        #[source]
        source: Box<OpsError>,
        /// What will still happen, and how to finish.
        next: String,
    },
}

impl From<PlanError> for OpsError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Aws(e) => OpsError::Aws(e),
            PlanError::Store(e) => OpsError::Store(e),
            PlanError::Setup { service, problem } => OpsError::Setup { service, problem },
            // Operators hold no fence; a plain store error carries the cause.
            PlanError::NotLeader => OpsError::Setup {
                service: String::new(),
                problem: "leadership lost".into(),
            },
        }
    }
}

fn store(config: &Config) -> Result<Store, OpsError> {
    let client = Client::new(&config.consul)?.for_role("operator");
    Ok(Store::new(client, &config.consul.kv_prefix))
}

/// The AWS SDK configuration: `coordinator.aws_region` and
/// `aws_endpoint`, or `region` instead of the configured region.
async fn aws_config(config: &Config, region: Option<&str>) -> aws_config::SdkConfig {
    let c = &config.coordinator;
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let region = region.map(str::to_owned).or_else(|| opt(&c.aws_region));
    let endpoint = opt(&c.aws_endpoint);
    crate::aws::sdk::load_config(region.as_deref(), endpoint.as_deref()).await
}

async fn aws(config: &Config) -> SdkFleet {
    SdkFleet::new(&aws_config(config, None).await)
}

/// The `[[services]]` entry named `service`.
fn service_config<'a>(config: &'a Config, service: &str) -> Result<&'a ServiceConfig, OpsError> {
    config
        .services
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| OpsError::UnknownService {
            service: service.to_owned(),
            configured: config.services.iter().map(|c| c.name.clone()).collect(),
        })
}

fn style() -> Style {
    Style {
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}

fn services<'a>(config: &'a Config, service: Option<&'a str>) -> Result<Vec<&'a str>, OpsError> {
    let configured = || config.services.iter().map(|c| c.name.clone()).collect();
    match service {
        Some(s) => {
            if !config.services.iter().any(|c| c.name == s) && !config.services.is_empty() {
                return Err(OpsError::UnknownService {
                    service: s.to_owned(),
                    configured: configured(),
                });
            }
            Ok(vec![s])
        }
        None if config.services.is_empty() => Err(OpsError::NoServices),
        None => Ok(config.services.iter().map(|s| s.name.as_str()).collect()),
    }
}

/// `rollgate plan [SERVICE] [--json]`: the newest plan of each service.
pub async fn show_plan(
    config: &Config,
    service: Option<&str>,
    json: bool,
) -> Result<String, OpsError> {
    let store = store(config)?;
    let mut shown = Vec::new();
    for svc in services(config, service)? {
        if let Some((plan, _)) = store.plans(svc).await?.pop() {
            shown.push(plan);
        }
    }
    if json {
        return Ok(serde_json::to_string_pretty(&shown).unwrap_or_default());
    }
    if shown.is_empty() {
        return Ok("No plans yet. Publish an image with `rollgate publish`.".into());
    }
    Ok(shown
        .iter()
        .map(|p| render::plan(p, style()))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `rollgate history [SERVICE] [--json]`: every plan, newest first.
pub async fn history(
    config: &Config,
    service: Option<&str>,
    json: bool,
) -> Result<String, OpsError> {
    let store = store(config)?;
    let mut plans: Vec<Plan> = Vec::new();
    for svc in services(config, service)? {
        plans.extend(store.plans(svc).await?.into_iter().map(|(p, _)| p));
    }
    plans.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    if json {
        return Ok(serde_json::to_string_pretty(&plans).unwrap_or_default());
    }
    Ok(render::history(&plans, style()))
}

/// Who is deciding: `--as`, else the OS user.
pub fn operator(name: Option<String>) -> String {
    name.filter(|n| !n.trim().is_empty())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// `rollgate approve` / `rollgate reject`.
pub async fn decide(
    config: &Config,
    plan_id: &str,
    decision: Decision,
) -> Result<String, OpsError> {
    let store = store(config)?;
    let now = now_ms();
    match store.decide(plan_id, decision, now).await? {
        Ok(plan) => Ok(format!(
            "Plan {} {}.",
            plan.id,
            render::decision(&plan.decision)
        )),
        Err(plan) => {
            let state = match &plan.decision {
                Decision::Pending { .. } => "expired (nobody answered in time)".to_string(),
                other => render::decision(other),
            };
            Err(OpsError::AlreadyDecided {
                plan: plan.id,
                service: plan.service,
                state,
            })
        }
    }
}

/// The one service meant when none is named (refused when several exist).
fn one_service<'a>(config: &'a Config, service: Option<&'a str>) -> Result<&'a str, OpsError> {
    let all = services(config, service)?;
    match all.as_slice() {
        [one] => Ok(one),
        many => Err(OpsError::AmbiguousService {
            configured: many.iter().map(|s| (*s).to_owned()).collect(),
        }),
    }
}

/// `rollgate pause|resume|abort|promote [SERVICE]`: queues the command for
/// the active rollout; refused when there is none.
pub async fn command(
    config: &Config,
    service: Option<&str>,
    command: crate::rollout::machine::OperatorCommand,
) -> Result<String, OpsError> {
    let store = store(config)?;
    let svc = one_service(config, service)?;
    let Some((rollout, _)) = store.rollout(svc).await? else {
        return Err(OpsError::NoRollout {
            service: svc.to_owned(),
        });
    };
    store.push_command(svc, &command).await?;
    let word = match &command {
        crate::rollout::machine::OperatorCommand::Pause => "pause",
        crate::rollout::machine::OperatorCommand::Resume => "resume",
        crate::rollout::machine::OperatorCommand::Abort { .. } => "abort (revert)",
        crate::rollout::machine::OperatorCommand::Promote => "promote",
    };
    Ok(format!(
        "Asked rollout {} of {svc} (now {}) to {word}; the leader applies it on its next step.",
        rollout.spec.id,
        rollout.state.name()
    ))
}

fn describe(rollout: &crate::rollout::machine::Rollout, plan: Option<&Plan>) -> String {
    let p = &rollout.progress;
    let batches = plan.map(|p| p.batches).unwrap_or(0);
    let deadline = rollout
        .wake_at()
        .map(|t| {
            let left = t.0.saturating_sub(now_ms());
            format!(
                ", next deadline in {}",
                humantime::format_duration(std::time::Duration::from_secs(left / 1000))
            )
        })
        .unwrap_or_default();
    use crate::rollout::machine::State;
    let svc = &rollout.spec.service;
    let hint = match &rollout.state {
        State::CanaryPaused(c) => match c.auto_promote_at {
            Some(t) => format!(
                "; the canary is healthy and promotes itself at {t} (or now: `rollgate promote {svc}`)"
            ),
            None => format!(
                "; the canary is healthy and waits: `rollgate promote {svc}` or `rollgate abort {svc}`"
            ),
        },
        State::Paused { .. } => format!("; paused: `rollgate resume {svc}` to continue"),
        _ => String::new(),
    };
    format!(
        "rollout {} of {}: {} (batch {}/{}), target {} {}; old instances {} (retired {}), new healthy {}{}{hint}",
        rollout.spec.id,
        rollout.spec.service,
        rollout.state.name(),
        p.batches_done,
        batches,
        rollout.spec.target_image,
        rollout.spec.target_version,
        p.to_replace.len(),
        p.retired.len(),
        p.accepted.len(),
        deadline
    )
}

/// `rollgate status [SERVICE] [--wait]`: the active rollout, or the last
/// outcome. With `wait`, follows the rollout (or the approved plan about to
/// start) to its end; answers whether it succeeded.
pub async fn status(
    config: &Config,
    service: Option<&str>,
    wait: bool,
) -> Result<(String, bool), OpsError> {
    let store = store(config)?;
    let svc = one_service(config, service)?;
    let mut last_line = String::new();
    loop {
        let plans = store.plans(svc).await?;
        let active = store.rollout(svc).await?;
        let followed = match &active {
            Some((r, _)) => plans
                .iter()
                .find(|(p, _)| p.id == r.spec.id)
                .map(|(p, _)| p.clone()),
            None => plans
                .iter()
                .find(|(p, _)| p.is_open_approved())
                .or(plans.iter().rev().find(|(p, _)| p.outcome.is_some()))
                .map(|(p, _)| p.clone()),
        };
        let line = match (&active, &followed) {
            (Some((r, _)), plan) => describe(r, plan.as_ref()),
            (None, Some(p)) if p.is_open_approved() => {
                format!("plan {} is approved; the rollout is starting", p.id)
            }
            (None, Some(p)) => {
                let (word, at, reason) = match &p.outcome {
                    Some(o) => (o.word(), o.at(), o.reason()),
                    None => ("unknown", 0, ""),
                };
                let text = format!(
                    "no rollout in progress for {svc}; last: plan {} {word} at {}{}",
                    p.id,
                    render::time(at),
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    }
                );
                let succeeded = matches!(p.outcome, Some(Outcome::Succeeded { .. }));
                return Ok((text, succeeded));
            }
            (None, None) => {
                return Ok((format!("no rollout for {svc} yet"), !wait));
            }
        };
        if !wait {
            return Ok((line, true));
        }
        if line != last_line {
            println!("{line}");
            last_line = line;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

//! `rollgate publish`: tags an image (or each image of a Packer manifest) as
//! a version of its artifact and wakes the coordinator, saying only what
//! the coordinator will do.
//!
//! Before tagging, it observes what the planner observes (the registry, the
//! group, the plans, the failed images) and asks the planner's own decision
//! (`plan::decide_publish`): plan it; nothing new (the group runs it, or a
//! plan covers it); or ignored, with why and what to do instead. An ignored
//! image is neither tagged nor triggered, and the command exits 4.
//! `--force` turns "failed before" and "rejected before" into a plan, which
//! the command creates itself (the planner would keep ignoring the image).
//!
//! Regions: each image of a manifest is tagged in its own region. Only the
//! image in the coordinator's region (`coordinator.aws_region`, else the
//! SDK's) is planned by this configuration's coordinator; `--region` keeps
//! one region's image and names the ones skipped.

use std::path::Path;

use super::{OpsError, aws_config, service_config, store};
use crate::aws::registry::manifest::parse_packer_manifest;
use crate::aws::registry::{Image, Registry, sort_newest_first};
use crate::aws::sdk::SdkFleet;
use crate::config::Config;
use crate::coordinator::planner::{make_plan, observe, store_plan};
use crate::rollout::plan::{
    self, Change, Ignored, Millis, Plan, Published, Situation, Verdict, now_ms,
};
use crate::rollout::store::{Store, Trigger};

/// What to publish.
#[derive(Debug, Clone)]
pub enum PublishSource {
    /// One image given on the command line.
    Image {
        /// Artifact name.
        artifact: String,
        /// AMI ID.
        image_id: String,
        /// Version.
        version: String,
    },
    /// A Packer manifest, with an optional artifact override.
    Manifest {
        /// The manifest file.
        path: String,
        /// Overrides the manifest's artifact.
        artifact: Option<String>,
    },
}

/// `rollgate publish`'s command line.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// What to publish.
    pub source: PublishSource,
    /// Only the image of this region (`--region`); `--ami` images live
    /// here.
    pub region: Option<String>,
    /// Plan an image that failed or was rejected before (`--force`).
    pub force: bool,
    /// Who forces (for the plan's record).
    pub operator: String,
}

/// One image to publish.
#[derive(Debug, Clone)]
struct Build {
    /// Its region; `None`: the configured one.
    region: Option<String>,
    artifact: String,
    image_id: String,
    version: String,
}

fn builds(source: &PublishSource, region: Option<&str>) -> Result<Vec<Build>, OpsError> {
    match source {
        PublishSource::Image {
            artifact,
            image_id,
            version,
        } => Ok(vec![Build {
            region: region.map(str::to_owned),
            artifact: artifact.clone(),
            image_id: image_id.clone(),
            version: version.clone(),
        }]),
        PublishSource::Manifest { path, artifact } => {
            let text =
                std::fs::read_to_string(Path::new(path)).map_err(|source| OpsError::Read {
                    path: path.clone(),
                    source,
                })?;
            let builds = parse_packer_manifest(&text, artifact.as_deref()).map_err(|source| {
                OpsError::Manifest {
                    path: path.clone(),
                    source,
                }
            })?;
            Ok(builds
                .into_iter()
                .map(|b| Build {
                    region: Some(b.region),
                    artifact: b.artifact,
                    image_id: b.image_id,
                    version: b.version,
                })
                .collect())
        }
    }
}

/// What publishing one image in the coordinator's region came to.
enum Home {
    /// Planned, or on its way: the lines to print.
    Done(String),
    /// Nothing will happen: why (nothing was changed).
    Refused(String),
}

/// `rollgate publish`. Answers what was done and what the coordinator will
/// do; an error when nothing will happen (nothing changed) or when a step
/// failed after others were done (saying which).
pub async fn publish(config: &Config, options: PublishOptions) -> Result<String, OpsError> {
    let mut builds = builds(&options.source, options.region.as_deref())?;
    let home_sdk = aws_config(config, None).await;
    let home = home_sdk
        .region()
        .map(|r| r.as_ref().to_owned())
        .unwrap_or_default();
    let mut lines = Vec::new();
    if let (Some(only), PublishSource::Manifest { path, .. }) = (&options.region, &options.source) {
        let (keep, skip): (Vec<Build>, Vec<Build>) = builds
            .into_iter()
            .partition(|b| b.region.as_deref() == Some(only.as_str()));
        if keep.is_empty() {
            return Err(OpsError::NotPlanned(format!(
                "{path} has no image in region {only} (it has {}); nothing was changed",
                skip.iter()
                    .map(|b| format!("{} in {}", b.image_id, b.region.as_deref().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for b in &skip {
            lines.push(format!(
                "Skipped {} in {} (--region {only}).",
                b.image_id,
                b.region.as_deref().unwrap_or("?")
            ));
        }
        builds = keep;
    }
    // Other regions first: a failure there leaves the coordinator's region
    // untouched, and the message says what was tagged.
    builds.sort_by_key(|b| b.region.as_ref().is_none_or(|r| *r == home));
    let mut done: Vec<String> = Vec::new();
    let mut refused = Vec::new();
    let mut planned_here = false;
    for b in builds {
        let region = b.region.clone().unwrap_or_else(|| home.clone());
        if region != home {
            let registry = SdkFleet::new(&aws_config(config, Some(&region)).await).registry();
            if let Err(e) = registry
                .tag_image(&b.image_id, &b.artifact, &b.version)
                .await
            {
                return Err(partly(&done, e.into(), "Nothing else was changed.".into()));
            }
            let line = format!(
                "Tagged {} in {region} as {} {}. Not planned by this configuration's coordinator, \
                 which runs in {home}: a coordinator in {region} plans it.",
                b.image_id, b.artifact, b.version
            );
            done.push(line.clone());
            lines.push(line);
            continue;
        }
        match publish_home(config, &home_sdk, &b, &options, &done).await? {
            Home::Done(text) => {
                planned_here = true;
                lines.push(text);
            }
            Home::Refused(why) => refused.push(why),
        }
    }
    if !refused.is_empty() {
        lines.extend(refused);
        return Err(OpsError::NotPlanned(lines.join("\n")));
    }
    if !planned_here {
        lines.push(format!(
            "No image is in {home}, this configuration's region: nothing is planned here."
        ));
        return Err(OpsError::NotPlanned(lines.join("\n")));
    }
    Ok(lines.join("\n"))
}

/// An error after `done`, saying what will still happen.
fn partly(done: &[String], source: OpsError, next: String) -> OpsError {
    if done.is_empty() {
        return source;
    }
    OpsError::PartlyDone {
        done: done.join("\n"),
        source: Box::new(source),
        next,
    }
}

/// What the coordinator will do for one service once the image is
/// published, with the inputs the planner reads.
struct Assessment {
    verdict: Verdict,
    plans: Vec<Plan>,
}

async fn assess(
    config: &Config,
    sdk: &SdkFleet,
    store: &Store,
    service: &str,
    image: &Image,
    now: Millis,
) -> Result<(Assessment, crate::coordinator::planner::Observation), OpsError> {
    let svc = service_config(config, service)?;
    let registry = sdk
        .registry()
        .with_owners(config.coordinator.image_owners.clone());
    let seen = observe(sdk, svc).await?;
    let plans: Vec<Plan> = store
        .plans(&svc.name)
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let failed = store.failed_images(&svc.name).await?;
    // The artifact's images as the planner will see them once this one is
    // tagged.
    let mut images = registry.find_images(&svc.artifact).await?;
    images.retain(|i| i.image_id != image.image_id);
    images.push(image.clone());
    sort_newest_first(&mut images);
    let newest = images
        .iter()
        .find(|i| i.is_available())
        .cloned()
        .unwrap_or_else(|| image.clone());
    let verdict = plan::decide_publish(
        image,
        &newest,
        &Situation {
            running_image: seen.running_image(),
            fleet_converged: seen.converged(),
            plans: &plans,
            failed: &failed,
            published: Some(Published {
                image_id: &image.image_id,
                at: now,
            }),
            now,
        },
    );
    Ok((Assessment { verdict, plans }, seen))
}

async fn publish_home(
    config: &Config,
    sdk_config: &aws_config::SdkConfig,
    b: &Build,
    options: &PublishOptions,
    done: &[String],
) -> Result<Home, OpsError> {
    let sdk = SdkFleet::new(sdk_config);
    let registry = sdk.registry();
    let store = store(config)?;
    let Some(described) = registry.describe_image(&b.image_id).await? else {
        return Err(partly(
            done,
            crate::aws::Error::not_found(
                "ec2:DescribeImages",
                format!("image {}", b.image_id),
                format!("cannot publish it as {} {}", b.artifact, b.version),
            )
            .into(),
            "Nothing else was changed.".into(),
        ));
    };
    let mut image = described;
    image.artifact = Some(b.artifact.clone());
    image.version = Some(b.version.clone());
    let now = now_ms();
    let services: Vec<String> = config
        .services
        .iter()
        .filter(|s| s.artifact == b.artifact)
        .map(|s| s.name.clone())
        .collect();
    let what = format!("{} as {} {}", b.image_id, b.artifact, b.version);
    let mut said = Vec::new();
    let mut force_plans = Vec::new();
    for service in &services {
        match assess(config, &sdk, &store, service, &image, now).await {
            Ok((a, seen)) => match a.verdict {
                Verdict::Plan { supersede } => said.push(if supersede.is_empty() {
                    format!("the coordinator plans it for {service} now")
                } else {
                    format!(
                        "the coordinator plans it for {service} now, superseding {}",
                        supersede.join(", ")
                    )
                }),
                Verdict::Nothing(why) if why.is_on_its_way() => {
                    said.push(format!("nothing new for {service}: {why}"));
                }
                Verdict::Nothing(why @ (Ignored::Failed { .. } | Ignored::Rejected { .. }))
                    if options.force =>
                {
                    force_plans.push((service.clone(), why, seen, a.plans));
                }
                Verdict::Nothing(why) => {
                    let hint = why
                        .hint(service)
                        .map(|h| format!(" To do so: {h}."))
                        .unwrap_or_default();
                    let force = if options.force {
                        " (--force overrides only a failure or a rejection)"
                    } else {
                        ""
                    };
                    return Ok(Home::Refused(format!(
                        "Not published: the coordinator would not plan {what} for {service}: {why}{force}.{hint} \
                         Nothing was changed."
                    )));
                }
            },
            // Cannot tell: publish as asked, and say so.
            Err(e) => said.push(format!(
                "could not tell whether the coordinator plans it for {service} ({e}); \
                 `rollgate plan {service}` shows what it does"
            )),
        }
    }
    if let Err(e) = registry
        .tag_image(&b.image_id, &b.artifact, &b.version)
        .await
    {
        return Err(partly(done, e.into(), "Nothing else was changed.".into()));
    }
    let tagged = format!("Tagged {what}.");
    let trigger = Trigger {
        image_id: b.image_id.clone(),
        version: b.version.clone(),
        at: now,
    };
    if let Err(e) = store.write_trigger(&b.artifact, &trigger).await {
        let mut so_far = done.to_vec();
        so_far.push(tagged);
        let poll = humantime::format_duration(config.coordinator.registry_poll);
        return Err(OpsError::PartlyDone {
            done: so_far.join("\n"),
            source: Box::new(OpsError::Store(e)),
            next: format!(
                "The publish trigger was not written, so the coordinator is not woken now; its registry poll \
                 (every {poll}) still finds the tagged image and plans it if it is the newest. \
                 Re-run this command to plan at once."
            ),
        });
    }
    for (service, why, seen, plans) in force_plans {
        let text = force_plan(config, &store, &registry, &service, &image, &why, &seen, &plans, options, now)
            .await
            .map_err(|e| {
                partly(
                    std::slice::from_ref(&tagged),
                    e,
                    "The image is tagged and triggered; the coordinator still ignores it. Re-run with --force."
                        .into(),
                )
            })?;
        said.push(text);
    }
    if services.is_empty() {
        said.push(format!(
            "no [[services]] entry of this configuration deploys {}; a coordinator configured for it plans it",
            b.artifact
        ));
    }
    Ok(Home::Done(format!(
        "Published {what}; {}.",
        said.join("; ")
    )))
}

/// `--force`: the plan the planner would not make, made here.
#[allow(clippy::too_many_arguments)]
async fn force_plan(
    config: &Config,
    store: &Store,
    registry: &impl Registry,
    service: &str,
    image: &Image,
    why: &Ignored,
    seen: &crate::coordinator::planner::Observation,
    plans: &[Plan],
    options: &PublishOptions,
    now: Millis,
) -> Result<String, OpsError> {
    let svc = service_config(config, service)?;
    let id = store.next_plan_id(service).await?;
    let running = seen.running_image();
    let current = registry.describe_image(running).await.ok().flatten();
    let plan = make_plan(svc, id, seen, current.as_ref(), image, Change::Image, now);
    let supersede: Vec<String> = plans
        .iter()
        .filter(|p| p.is_pending(now) && p.target.image_id != image.image_id)
        .map(|p| p.id.clone())
        .collect();
    let Some(plan) = store_plan(store, svc, plan, &supersede, now).await? else {
        return Err(OpsError::NotPlanned(
            "another plan took the plan ID first; run the command again".into(),
        ));
    };
    tracing::info!(service, plan = %plan.id, by = %options.operator, reason = %why,
        "Plan forced by an operator.");
    Ok(format!(
        "{why}, overridden by {} (--force): plan {} is {}; `rollgate plan {service}` shows it",
        options.operator,
        plan.id,
        crate::rollout::render::decision(&plan.decision)
    ))
}

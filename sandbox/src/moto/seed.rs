//! Seeding a moto world: a published AMI, a launch template and an Auto
//! Scaling group of N instances, through the real AWS SDK.
//!
//! The AMI is tagged the way rollgate's registry expects
//! (`rollgate:artifact`, `rollgate:version`) plus any behaviour tags the
//! fleet simulator reads. Tags are set with a separate `CreateTags`, because
//! moto ignores `TagSpecifications` on `RegisterImage`.

use aws_config::SdkConfig;
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData, Tag};

use super::{Moto, REGION};

/// The tag naming an AMI's artifact (as rollgate's registry reads it).
pub const ARTIFACT_TAG: &str = "rollgate:artifact";
/// The tag carrying an AMI's version.
pub const VERSION_TAG: &str = "rollgate:version";

/// A seeding call failed.
#[derive(Debug, thiserror::Error)]
#[error("seeding moto: {call} failed: {message}")]
pub struct SeedError {
    /// The API call (`ec2:RegisterImage`).
    pub call: &'static str,
    /// What the SDK said.
    pub message: String,
}

fn failed<E: std::error::Error>(call: &'static str) -> impl FnOnce(E) -> SeedError {
    move |e| SeedError {
        call,
        message: DisplayErrorContext(e).to_string(),
    }
}

/// An AMI to register and publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// The artifact name (`acmeinc/web`).
    pub artifact: String,
    /// The version (`1.0.0`).
    pub version: String,
    /// Extra tags (behaviour tags such as a boot delay or "broken").
    pub tags: Vec<(String, String)>,
}

impl ImageSpec {
    /// `artifact` at `version`, no extra tags.
    pub fn new(artifact: &str, version: &str) -> Self {
        Self {
            artifact: artifact.to_owned(),
            version: version.to_owned(),
            tags: Vec::new(),
        }
    }

    /// Adds a tag.
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A group to create around a freshly registered AMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSpec {
    /// The Auto Scaling group's name (unique per test when tests share moto).
    pub group: String,
    /// The launch template's name.
    pub template: String,
    /// The AMI every instance launches from.
    pub image: ImageSpec,
    /// How many instances to launch (the desired capacity).
    pub instances: i32,
    /// The group's minimum size.
    pub min_size: i32,
    /// The group's maximum size (room for a surge).
    pub max_size: i32,
    /// The launch template's instance type.
    pub instance_type: InstanceType,
    /// Availability zones of the group.
    pub availability_zones: Vec<String>,
}

impl SeedSpec {
    /// A group `group` of `instances` instances of `image`; the template is
    /// named `<group>-lt`, min = `instances`, max leaves room to double it.
    pub fn new(group: &str, image: ImageSpec, instances: i32) -> Self {
        Self {
            group: group.to_owned(),
            template: format!("{group}-lt"),
            image,
            instances,
            min_size: instances,
            max_size: (instances * 2).max(instances + 1),
            instance_type: InstanceType::T3Micro,
            availability_zones: vec![format!("{REGION}a"), format!("{REGION}b")],
        }
    }
}

/// What [`seed_group`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    /// The group's name.
    pub group: String,
    /// The AMI id.
    pub image_id: String,
    /// The launch template id (`lt-...`).
    pub template_id: String,
    /// The version the group is pinned to (1).
    pub template_version: i64,
    /// The instances the group launched.
    pub instance_ids: Vec<String>,
}

/// Registers an AMI named `<artifact>-<version>` and tags it.
pub async fn register_image(config: &SdkConfig, image: &ImageSpec) -> Result<String, SeedError> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let name = format!("{}-{}", image.artifact.replace('/', "-"), image.version);
    let out = ec2
        .register_image()
        .name(&name)
        .description(format!("{} {}", image.artifact, image.version))
        .root_device_name("/dev/xvda")
        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
        .send()
        .await
        .map_err(failed("ec2:RegisterImage"))?;
    let image_id = out.image_id().unwrap_or_default().to_owned();
    let mut tags = ec2
        .create_tags()
        .resources(&image_id)
        .tags(
            Tag::builder()
                .key(ARTIFACT_TAG)
                .value(&image.artifact)
                .build(),
        )
        .tags(
            Tag::builder()
                .key(VERSION_TAG)
                .value(&image.version)
                .build(),
        );
    for (key, value) in &image.tags {
        tags = tags.tags(Tag::builder().key(key).value(value).build());
    }
    tags.send().await.map_err(failed("ec2:CreateTags"))?;
    Ok(image_id)
}

/// Registers the AMI, creates the launch template (version 1 launches the
/// AMI) and the group, and returns what the group launched.
pub async fn seed_group(moto: &Moto, spec: &SeedSpec) -> Result<Seeded, SeedError> {
    let config = moto.sdk_config();
    let image_id = register_image(&config, &spec.image).await?;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let template = ec2
        .create_launch_template()
        .launch_template_name(&spec.template)
        .version_description(format!("{} {}", spec.image.artifact, spec.image.version))
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&image_id)
                .instance_type(spec.instance_type.clone())
                .build(),
        )
        .send()
        .await
        .map_err(failed("ec2:CreateLaunchTemplate"))?;
    let template_id = template
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .unwrap_or_default()
        .to_owned();

    let autoscaling = aws_sdk_autoscaling::Client::new(&config);
    autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(&spec.group)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(&template_id)
                .version("1")
                .build(),
        )
        .min_size(spec.min_size)
        .max_size(spec.max_size)
        .desired_capacity(spec.instances)
        .set_availability_zones(Some(spec.availability_zones.clone()))
        .send()
        .await
        .map_err(failed("autoscaling:CreateAutoScalingGroup"))?;
    let groups = autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&spec.group)
        .send()
        .await
        .map_err(failed("autoscaling:DescribeAutoScalingGroups"))?;
    let instance_ids = groups
        .auto_scaling_groups()
        .iter()
        .flat_map(|g| g.instances())
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    Ok(Seeded {
        group: spec.group.clone(),
        image_id,
        template_id,
        template_version: 1,
        instance_ids,
    })
}

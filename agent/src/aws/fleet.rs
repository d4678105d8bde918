//! The plain data the [`Fleet`](super::Fleet) trait speaks: what a rollout
//! needs to know about an Auto Scaling group, its instances and its launch
//! template. No AWS SDK type appears in a public field; the one SDK value
//! that must travel (the full launch template data) is wrapped opaquely in
//! [`LaunchTemplateData`].

pub use rollgate_core::fleet::{
    Group, GroupInstance, Instance, LaunchTemplateRef, TemplateVersion,
};

/// One version of a launch template (`DescribeLaunchTemplateVersions`).
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchTemplateVersion {
    /// `lt-...`.
    pub template_id: String,
    /// The template's name.
    pub template_name: String,
    /// The version number; versions are immutable, so the number identifies
    /// the data.
    pub version_number: i64,
    /// The AMI this version launches, when it names one.
    pub image_id: Option<String>,
    /// The version's description, if any.
    pub description: Option<String>,
    /// Everything else the version launches with, ready to be sent back.
    pub data: LaunchTemplateData,
}

impl LaunchTemplateVersion {
    /// What the rollout core needs of it (the launch data stays here).
    pub fn view(&self) -> TemplateVersion {
        TemplateVersion {
            template_id: self.template_id.clone(),
            template_name: self.template_name.clone(),
            version_number: self.version_number,
            image_id: self.image_id.clone(),
        }
    }
}

/// The full data of a launch template version, opaque on purpose: rollgate
/// copies it whole into a new version and changes only the image.
///
/// It holds the data in the form `CreateLaunchTemplateVersion` takes, so what
/// was read is exactly what will be sent. Two values compare equal when every
/// field does. Its `Debug` output redacts user data (the SDK marks it
/// sensitive).
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchTemplateData(pub(crate) aws_sdk_ec2::types::RequestLaunchTemplateData);

impl Default for LaunchTemplateData {
    fn default() -> Self {
        Self(aws_sdk_ec2::types::RequestLaunchTemplateData::builder().build())
    }
}

impl LaunchTemplateData {
    /// Data that launches `image_id` and sets nothing else (for fakes and
    /// tests).
    pub fn with_image_only(image_id: &str) -> Self {
        Self(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(image_id)
                .build(),
        )
    }

    /// The same data launching another image.
    pub fn with_image(&self, image_id: &str) -> Self {
        let mut data = self.0.clone();
        data.image_id = Some(image_id.to_owned());
        Self(data)
    }

    /// The same data with another instance type (for fakes and tests: a
    /// change Terraform makes).
    #[cfg(any(test, feature = "test-util"))]
    pub fn with_instance_type(&self, instance_type: &str) -> Self {
        let mut data = self.0.clone();
        data.instance_type = Some(instance_type.into());
        Self(data)
    }

    /// The AMI the data launches.
    pub fn image_id(&self) -> Option<&str> {
        self.0.image_id()
    }

    /// The instance type (`t3.micro`), for plans and reports.
    pub fn instance_type(&self) -> Option<&str> {
        self.0.instance_type().map(|t| t.as_str())
    }

    /// The security groups by id, for reports.
    pub fn security_group_ids(&self) -> &[String] {
        self.0.security_group_ids()
    }

    /// The base64 user data, if any.
    pub fn user_data(&self) -> Option<&str> {
        self.0.user_data()
    }
}

//! SDK values to the plain types of [`crate::aws`].

use std::time::SystemTime;

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use tracing::warn;

use crate::aws::{Instance, LaunchTemplateRef};

pub(super) fn template_ref(spec: &LaunchTemplateSpecification) -> Option<LaunchTemplateRef> {
    Some(LaunchTemplateRef {
        id: spec.launch_template_id()?.to_owned(),
        name: spec.launch_template_name().unwrap_or_default().to_owned(),
        version: spec.version().unwrap_or("$Default").to_owned(),
    })
}

pub(super) fn instance_from_sdk(i: &aws_sdk_ec2::types::Instance) -> Instance {
    Instance {
        instance_id: i.instance_id().unwrap_or_default().to_owned(),
        image_id: i.image_id().unwrap_or_default().to_owned(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        private_ip: i.private_ip_address().map(str::to_owned),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_owned(),
        launch_time: i.launch_time().and_then(|t| SystemTime::try_from(*t).ok()),
    }
}

/// Logs fields of a launch template version that only `SourceVersion`
/// inheritance carries into a new version.
pub(super) fn warn_skipped(template_id: &str, version: i64, skipped: &[&str]) {
    if !skipped.is_empty() {
        warn!(
            template_id,
            version,
            fields = %skipped.join(","),
            "Launch template fields not copied explicitly; AWS inherits them through SourceVersion."
        );
    }
}

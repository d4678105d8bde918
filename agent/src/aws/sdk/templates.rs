//! Launch template versions: read one, and create one idempotently.
//!
//! A created version is its base with another image and nothing else: the
//! base's description too (Terraform owns every field but the image, and
//! reads back the template's versions; a description of rollgate's would
//! show as a change to undo). Nothing here changes a template's default
//! version (`ec2:ModifyLaunchTemplate` is never called).

use aws_sdk_ec2::types::LaunchTemplateVersion as SdkVersion;
use tracing::{info, warn};

use super::warn_skipped;
use crate::aws::template_data::to_request;
use crate::aws::{Error, LaunchTemplateData, LaunchTemplateVersion, Result};

const DESCRIBE_VERSIONS: &str = "ec2:DescribeLaunchTemplateVersions";
const CREATE_VERSION: &str = "ec2:CreateLaunchTemplateVersion";

/// One version of a template, by number or `$Default`/`$Latest`.
pub(super) async fn describe_version(
    ec2: &aws_sdk_ec2::Client,
    template_id: &str,
    version: &str,
) -> Result<LaunchTemplateVersion> {
    let resource = format!("launch template {template_id} version {version}");
    let out = ec2
        .describe_launch_template_versions()
        .launch_template_id(template_id)
        .versions(version)
        .send()
        .await
        .map_err(|e| Error::from_sdk(DESCRIBE_VERSIONS, resource.clone(), e))?;
    let found = out
        .launch_template_versions()
        .first()
        .ok_or_else(|| Error::not_found(DESCRIBE_VERSIONS, resource.clone(), ""))?;
    let (version, skipped) = from_sdk(found).ok_or_else(|| {
        Error::unexpected(
            DESCRIBE_VERSIONS,
            resource,
            "the answer has no template id or version number",
        )
    })?;
    warn_skipped(&version.template_id, version.version_number, &skipped);
    Ok(version)
}

/// Creates `base` with `image_id` as a new version, keeping `base`'s
/// description, or finds the one an earlier call created.
///
/// Idempotent twice over: the client token is derived from the rollout, the
/// template, the base version and the image, so AWS answers a replay with
/// the version it created the first time; and before creating, versions
/// newer than `base` are searched for one with the same description and
/// data (for emulators that ignore client tokens). Such a version is a copy
/// of `base` with this image whoever made it, so using it is the same as
/// creating it.
pub(super) async fn create_version(
    ec2: &aws_sdk_ec2::Client,
    base: &LaunchTemplateVersion,
    image_id: &str,
    rollout_id: &str,
) -> Result<i64> {
    let template_id = base.template_id.as_str();
    let resource = format!(
        "launch template {template_id} (from version {} with image {image_id})",
        base.version_number
    );
    let wanted = base.data.with_image(image_id);
    let description = base.description.as_deref();
    if let Some(existing) = find_existing(ec2, base, &wanted, description).await? {
        info!(
            template_id,
            version = existing,
            image_id,
            "Launch template version already exists."
        );
        return Ok(existing);
    }
    let token = client_token(&[
        rollout_id,
        template_id,
        &base.version_number.to_string(),
        image_id,
    ]);
    let out = ec2
        .create_launch_template_version()
        .launch_template_id(template_id)
        // AWS copies every launch parameter not sent from the source
        // version; the full data is sent too because emulators ignore
        // SourceVersion. The description is not a launch parameter: sent as
        // the base has it, or not at all.
        .source_version(base.version_number.to_string())
        .set_version_description(description.map(str::to_owned))
        .client_token(token)
        .launch_template_data(wanted.0)
        .send()
        .await
        .map_err(|e| Error::from_sdk(CREATE_VERSION, resource.clone(), e))?;
    if let Some(warning) = out.warning() {
        warn!(template_id, warning = ?warning, "AWS warned about the new launch template version.");
    }
    let version = out
        .launch_template_version()
        .and_then(|v| v.version_number())
        .ok_or_else(|| {
            Error::unexpected(CREATE_VERSION, resource, "the answer has no version number")
        })?;
    info!(
        template_id,
        version, image_id, "Launch template version created."
    );
    Ok(version)
}

/// A version newer than `base` with this description and exactly this data.
async fn find_existing(
    ec2: &aws_sdk_ec2::Client,
    base: &LaunchTemplateVersion,
    wanted: &LaunchTemplateData,
    description: Option<&str>,
) -> Result<Option<i64>> {
    let resource = format!(
        "launch template {} versions after {}",
        base.template_id, base.version_number
    );
    let mut next_token = None;
    loop {
        let out = ec2
            .describe_launch_template_versions()
            .launch_template_id(&base.template_id)
            .min_version((base.version_number + 1).to_string())
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| Error::from_sdk(DESCRIBE_VERSIONS, resource.clone(), e))?;
        let found = out
            .launch_template_versions()
            .iter()
            .filter(|v| v.version_number().is_some_and(|n| n > base.version_number))
            .filter(|v| v.version_description() == description)
            .filter_map(from_sdk)
            .find(|(v, _)| &v.data == wanted);
        if let Some((version, _)) = found {
            return Ok(Some(version.version_number));
        }
        next_token = out
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if next_token.is_none() {
            return Ok(None);
        }
    }
}

/// The plain version, and the fields only `SourceVersion` carries.
fn from_sdk(v: &SdkVersion) -> Option<(LaunchTemplateVersion, Vec<&'static str>)> {
    let empty = aws_sdk_ec2::types::ResponseLaunchTemplateData::builder().build();
    let (data, skipped) = to_request(v.launch_template_data().unwrap_or(&empty));
    let version = LaunchTemplateVersion {
        template_id: v.launch_template_id()?.to_owned(),
        template_name: v.launch_template_name().unwrap_or_default().to_owned(),
        version_number: v.version_number()?,
        image_id: data.image_id().map(str::to_owned),
        description: v.version_description().map(str::to_owned),
        data: LaunchTemplateData(data),
    };
    Some((version, skipped))
}

/// A client token (at most 64 ASCII characters) that is the same for the same
/// parts: FNV-1a, stable across Rust releases, unlike `DefaultHasher`.
fn client_token(parts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("rollgate-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::client_token;

    #[test]
    fn client_token_is_stable_and_tells_inputs_apart() {
        let a = client_token(&["web-7", "lt-1", "3", "ami-1"]);
        assert_eq!(a, client_token(&["web-7", "lt-1", "3", "ami-1"]));
        assert_ne!(a, client_token(&["web-8", "lt-1", "3", "ami-1"]));
        assert_ne!(a, client_token(&["web-7", "lt-1", "4", "ami-1"]));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(client_token(&["ab", "c"]), client_token(&["a", "bc"]));
        assert!(a.len() <= 64 && a.is_ascii());
    }
}

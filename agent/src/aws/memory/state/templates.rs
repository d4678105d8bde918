//! Launch templates in the memory world: immutable, numbered versions.

use std::collections::BTreeMap;

use super::{MemTemplate, State};
use crate::aws::{Error, LaunchTemplateData, LaunchTemplateRef, LaunchTemplateVersion, Result};

impl State {
    pub(in crate::aws::memory) fn add_template(
        &mut self,
        name: &str,
        data: LaunchTemplateData,
    ) -> LaunchTemplateVersion {
        let id = format!("lt-{:017x}", self.next());
        let version = LaunchTemplateVersion {
            template_id: id.clone(),
            template_name: name.to_owned(),
            version_number: 1,
            image_id: data.image_id().map(str::to_owned),
            description: None,
            data,
        };
        let template = MemTemplate {
            name: name.to_owned(),
            versions: BTreeMap::from([(1, version.clone())]),
            default: 1,
            tokens: BTreeMap::new(),
        };
        self.templates.insert(id, template);
        version
    }

    pub(in crate::aws::memory) fn template_version(
        &self,
        template_id: &str,
        version: &str,
    ) -> Option<&LaunchTemplateVersion> {
        let template = self.templates.get(template_id)?;
        let number = match version {
            "$Latest" => *template.versions.keys().next_back()?,
            "$Default" => template.default,
            n => n.parse().ok()?,
        };
        template.versions.get(&number)
    }

    pub(in crate::aws::memory) fn template_ref(
        &self,
        call: &'static str,
        group: &str,
        template_id: &str,
        version: i64,
    ) -> Result<LaunchTemplateRef> {
        let template = self
            .templates
            .get(template_id)
            .filter(|t| t.versions.contains_key(&version));
        let template = template.ok_or_else(|| {
            Error::not_found(
                call,
                format!("launch template {template_id} version {version} (for group {group})"),
                "",
            )
        })?;
        Ok(LaunchTemplateRef {
            id: template_id.to_owned(),
            name: template.name.clone(),
            version: version.to_string(),
        })
    }

    pub(in crate::aws::memory) fn create_version(
        &mut self,
        base: &LaunchTemplateVersion,
        image_id: &str,
        rollout_id: &str,
    ) -> Result<i64> {
        let call = "ec2:CreateLaunchTemplateVersion";
        let template = self.templates.get_mut(&base.template_id).ok_or_else(|| {
            Error::not_found(call, format!("launch template {}", base.template_id), "")
        })?;
        let data = base.data.with_image(image_id);
        // As the SDK fleet: the client token of this rollout's request, or
        // else a copy of the base with this image that exists already.
        let token = format!(
            "{rollout_id} {} {} {image_id}",
            base.template_id, base.version_number
        );
        if let Some(v) = template.tokens.get(&token) {
            return Ok(*v);
        }
        let existing = template.versions.values().find(|v| {
            v.version_number > base.version_number
                && v.description == base.description
                && v.data == data
        });
        if let Some(existing) = existing {
            return Ok(existing.version_number);
        }
        let number = template.versions.keys().next_back().copied().unwrap_or(0) + 1;
        let version = LaunchTemplateVersion {
            template_id: base.template_id.clone(),
            template_name: template.name.clone(),
            version_number: number,
            image_id: Some(image_id.to_owned()),
            description: base.description.clone(),
            data,
        };
        template.versions.insert(number, version);
        template.tokens.insert(token, number);
        Ok(number)
    }

    pub(in crate::aws::memory) fn terraform_apply(
        &mut self,
        template_id: &str,
        description: &str,
        change: impl FnOnce(&LaunchTemplateData) -> LaunchTemplateData,
    ) -> Option<LaunchTemplateVersion> {
        let template = self.templates.get_mut(template_id)?;
        let latest = template.versions.values().next_back()?;
        let data = change(&latest.data);
        let number = latest.version_number + 1;
        let version = LaunchTemplateVersion {
            template_id: template_id.to_owned(),
            template_name: template.name.clone(),
            version_number: number,
            image_id: data.image_id().map(str::to_owned),
            description: Some(description.to_owned()),
            data,
        };
        template.versions.insert(number, version.clone());
        template.default = number;
        Some(version)
    }

    pub(in crate::aws::memory) fn set_template(
        &mut self,
        group: &str,
        template_id: &str,
        version: i64,
    ) -> Result<()> {
        let call = "autoscaling:UpdateAutoScalingGroup";
        let template = self.template_ref(call, group, template_id, version)?;
        self.group_mut(call, group)?.template = template;
        Ok(())
    }
}

//! [`SdkRegistry`]: the registry over EC2 images and their tags.

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
use aws_sdk_ec2::types::{Filter, Tag};
use tracing::info;

use super::{ARTIFACT_TAG, Image, Registry, VERSION_TAG, sort_newest_first};
use crate::aws::{Error, Result};

const DESCRIBE_IMAGES: &str = "ec2:DescribeImages";
const CREATE_TAGS: &str = "ec2:CreateTags";

/// The [`Registry`] backed by `ec2:DescribeImages` and `ec2:CreateTags`.
#[derive(Debug, Clone)]
pub struct SdkRegistry {
    /// The EC2 client.
    ec2: aws_sdk_ec2::Client,
    /// Whose images count (`self`, account ids, `amazon`); empty means
    /// every image the account can see, which also finds images other
    /// accounts share, so the default is `self`.
    owners: Vec<String>,
    /// Where the client's calls go, named by errors without an answer.
    endpoint: String,
}

impl SdkRegistry {
    /// A registry of this account's images.
    pub fn new(config: &SdkConfig) -> Self {
        Self::from_client(aws_sdk_ec2::Client::new(config))
            .with_endpoint(crate::aws::sdk::ec2_endpoint(config))
    }

    /// A registry over an existing client, for this account's images.
    pub fn from_client(ec2: aws_sdk_ec2::Client) -> Self {
        Self {
            ec2,
            owners: vec!["self".to_owned()],
            endpoint: String::new(),
        }
    }

    /// Names `endpoint` (where the client's calls go) in errors without an
    /// answer.
    pub fn with_endpoint(mut self, endpoint: String) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Looks at images of these owners instead (for AMIs built in another
    /// account and shared with this one).
    pub fn with_owners(mut self, owners: Vec<String>) -> Self {
        self.owners = owners;
        self
    }
}

impl Registry for SdkRegistry {
    async fn find_images(&self, artifact: &str) -> Result<Vec<Image>> {
        let filter = Filter::builder()
            .name(format!("tag:{ARTIFACT_TAG}"))
            .values(artifact)
            .build();
        let owners = (!self.owners.is_empty()).then(|| self.owners.clone());
        let mut images = Vec::new();
        let mut next_token = None;
        loop {
            let out = self
                .ec2
                .describe_images()
                .set_owners(owners.clone())
                .filters(filter.clone())
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|e| {
                    Error::from_sdk(DESCRIBE_IMAGES, format!("images of artifact {artifact}"), e)
                        .at(&self.endpoint)
                })?;
            images.extend(out.images().iter().map(image_from_sdk));
            next_token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if next_token.is_none() {
                break;
            }
        }
        // The filter is exact in AWS; keep the guarantee whatever answers.
        images.retain(|i| i.artifact.as_deref() == Some(artifact));
        sort_newest_first(&mut images);
        Ok(images)
    }

    async fn describe_image(&self, image_id: &str) -> Result<Option<Image>> {
        let result = self.ec2.describe_images().image_ids(image_id).send().await;
        match result.map_err(|e| {
            Error::from_sdk(DESCRIBE_IMAGES, format!("image {image_id}"), e).at(&self.endpoint)
        }) {
            Ok(out) => Ok(out
                .images()
                .iter()
                .find(|i| i.image_id() == Some(image_id))
                .map(image_from_sdk)),
            // InvalidAMIID.NotFound / .Malformed / .Unavailable: no such image.
            Err(e)
                if e.is_not_found() || e.code().is_some_and(|c| c.starts_with("InvalidAMIID.")) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn tag_image(&self, image_id: &str, artifact: &str, version: &str) -> Result<()> {
        let resource = format!("image {image_id}");
        if self.describe_image(image_id).await?.is_none() {
            return Err(Error::not_found(
                CREATE_TAGS,
                resource,
                format!("cannot publish it as {artifact} {version}"),
            ));
        }
        self.ec2
            .create_tags()
            .resources(image_id)
            .tags(Tag::builder().key(ARTIFACT_TAG).value(artifact).build())
            .tags(Tag::builder().key(VERSION_TAG).value(version).build())
            .send()
            .await
            .map_err(|e| Error::from_sdk(CREATE_TAGS, resource, e).at(&self.endpoint))?;
        info!(image_id, artifact, version, "Image published.");
        Ok(())
    }
}

fn image_from_sdk(i: &aws_sdk_ec2::types::Image) -> Image {
    let tags: BTreeMap<String, String> = i
        .tags()
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect();
    Image {
        image_id: i.image_id().unwrap_or_default().to_owned(),
        name: i.name().unwrap_or_default().to_owned(),
        artifact: tags.get(super::ARTIFACT_TAG).cloned(),
        version: tags.get(super::VERSION_TAG).cloned(),
        state: i.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        creation_date: i.creation_date().and_then(parse_creation_date),
        tags,
    }
}

/// EC2 reports `CreationDate` as ISO 8601 text (`2024-05-01T10:00:00.000Z`).
fn parse_creation_date(text: &str) -> Option<SystemTime> {
    let parsed = DateTime::from_str(text, DateTimeFormat::DateTime).ok()?;
    SystemTime::try_from(parsed).ok()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::parse_creation_date;

    #[test]
    fn parses_ec2_creation_dates() {
        let t = parse_creation_date("2024-05-01T10:00:00.000Z").expect("parses");
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_714_557_600));
        assert!(parse_creation_date("yesterday").is_none());
    }
}

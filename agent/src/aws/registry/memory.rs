//! [`MemoryRegistry`]: an in-memory [`Registry`] for pure-logic tests.
//!
//! Tests only, like [`crate::aws::memory`] (see there why a feature and not a
//! separate crate): compiled with `cfg(test)` or the `test-util` feature.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use super::{ARTIFACT_TAG, Image, Registry, VERSION_TAG, sort_newest_first};
use crate::aws::{Error, Result};

/// Images in a map, with the same tag rules and ordering as the SDK registry.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    /// Images by id.
    images: Mutex<BTreeMap<String, Image>>,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an image.
    pub fn insert(&self, image: Image) {
        self.lock().insert(image.image_id.clone(), image);
    }

    /// Adds an available, untagged image created at `created` and returns it.
    pub fn add_untagged(&self, image_id: &str, created: SystemTime) -> Image {
        let image = Image {
            image_id: image_id.to_owned(),
            name: image_id.to_owned(),
            artifact: None,
            version: None,
            state: "available".to_owned(),
            creation_date: Some(created),
            tags: BTreeMap::new(),
        };
        self.insert(image.clone());
        image
    }

    /// Adds an available image published as `version` of `artifact`.
    pub fn add_published(
        &self,
        image_id: &str,
        artifact: &str,
        version: &str,
        created: SystemTime,
    ) -> Image {
        self.add_untagged(image_id, created);
        let mut images = self.lock();
        let image = images.get_mut(image_id).expect("just inserted");
        tag(image, artifact, version);
        image.clone()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Image>> {
        // A panic while holding the lock cannot leave the map half-written.
        self.images.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn tag(image: &mut Image, artifact: &str, version: &str) {
    image
        .tags
        .insert(ARTIFACT_TAG.to_owned(), artifact.to_owned());
    image
        .tags
        .insert(VERSION_TAG.to_owned(), version.to_owned());
    image.artifact = Some(artifact.to_owned());
    image.version = Some(version.to_owned());
}

impl Registry for MemoryRegistry {
    async fn find_images(&self, artifact: &str) -> Result<Vec<Image>> {
        let mut images: Vec<Image> = self
            .lock()
            .values()
            .filter(|i| i.artifact.as_deref() == Some(artifact))
            .cloned()
            .collect();
        sort_newest_first(&mut images);
        Ok(images)
    }

    async fn describe_image(&self, image_id: &str) -> Result<Option<Image>> {
        Ok(self.lock().get(image_id).cloned())
    }

    async fn tag_image(&self, image_id: &str, artifact: &str, version: &str) -> Result<()> {
        let mut images = self.lock();
        let image = images.get_mut(image_id).ok_or_else(|| {
            Error::not_found(
                "ec2:CreateTags",
                format!("image {image_id}"),
                format!("cannot publish it as {artifact} {version}"),
            )
        })?;
        tag(image, artifact, version);
        Ok(())
    }
}

//! The AMI artifact registry: AMIs published under an artifact name
//! (`acmeinc/web`) and a version, both as tags on the image
//! ([`ARTIFACT_TAG`], [`VERSION_TAG`]).
//!
//! The coordinator polls [`Registry::newest_image`] to notice a new version;
//! the publishing step (after Packer) reads Packer's manifest
//! ([`manifest::parse_packer_manifest`]) and calls [`Registry::tag_image`].
//!
//! This module must never pick an image by anything but its tags and its
//! creation date (names are free text), and never return images in EC2's
//! order (there is none): [`sort_newest_first`] decides.

pub mod manifest;
#[cfg(any(test, feature = "test-util"))]
mod memory;
mod sdk;

use std::cmp::Ordering;
use std::future::Future;

#[cfg(any(test, feature = "test-util"))]
pub use memory::MemoryRegistry;
pub use sdk::SdkRegistry;

use super::Result;

/// The tag that names the artifact an AMI is a version of.
pub const ARTIFACT_TAG: &str = "rollgate:artifact";
/// The tag that carries the AMI's version of the artifact.
pub const VERSION_TAG: &str = "rollgate:version";

pub use rollgate_core::fleet::Image;

/// Where AMIs are published and found.
///
/// Like [`super::Fleet`], an `async fn` trait with `Send` futures; take it as
/// a generic parameter.
pub trait Registry: Send + Sync {
    /// Every image tagged as a version of `artifact`, newest first (see
    /// [`sort_newest_first`]). None is not an error: an empty list.
    fn find_images(&self, artifact: &str) -> impl Future<Output = Result<Vec<Image>>> + Send;

    /// The newest *available* image of `artifact`, if there is one.
    fn newest_image(&self, artifact: &str) -> impl Future<Output = Result<Option<Image>>> + Send {
        async move {
            let images = self.find_images(artifact).await?;
            Ok(images.into_iter().find(Image::is_available))
        }
    }

    /// One image by id; `None` when EC2 does not know it.
    fn describe_image(&self, image_id: &str) -> impl Future<Output = Result<Option<Image>>> + Send;

    /// Publishes an existing image as `version` of `artifact` (idempotent).
    /// An unknown image is an error naming it.
    fn tag_image(
        &self,
        image_id: &str,
        artifact: &str,
        version: &str,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Sorts newest first: by creation date (unknown dates last), then, for equal
/// dates (one-second resolution makes ties likely), by version, higher
/// first ([`compare_versions`]), then by image id so the order is total.
pub fn sort_newest_first(images: &mut [Image]) {
    images.sort_by(|a, b| {
        let by_date = match (a.creation_date, b.creation_date) {
            (Some(a), Some(b)) => b.cmp(&a),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        let by_version = match (&a.version, &b.version) {
            (Some(a), Some(b)) => compare_versions(b, a),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        by_date
            .then(by_version)
            .then_with(|| a.image_id.cmp(&b.image_id))
    });
}

/// Orders two version strings: by semantic versioning when both parse (a
/// leading `v` allowed), otherwise naturally (digit runs compare as numbers,
/// so `1.10` > `1.9` and `build-10` > `build-9`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parse = |v: &str| semver::Version::parse(v.strip_prefix('v').unwrap_or(v)).ok();
    if let (Some(a), Some(b)) = (parse(a), parse(b)) {
        return a.cmp(&b);
    }
    natural_cmp(a, b)
}

/// Natural order: runs of digits compare by value, the rest by character.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = split_digits(a);
                let (nb, rb) = split_digits(b);
                let (ta, tb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                (a, b) = (&a[x.len_utf8()..], &b[y.len_utf8()..]);
            }
        }
    }
}

fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

#[cfg(test)]
mod tests;

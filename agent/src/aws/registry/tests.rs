#![allow(clippy::unwrap_used)]

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn image(id: &str, version: Option<&str>, secs: Option<u64>) -> Image {
    Image {
        image_id: id.to_owned(),
        name: id.to_owned(),
        artifact: Some("acmeinc/web".to_owned()),
        version: version.map(str::to_owned),
        state: "available".to_owned(),
        creation_date: secs.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        tags: BTreeMap::new(),
    }
}

#[test]
fn versions_compare_semantically_then_naturally() {
    assert_eq!(compare_versions("1.10.0", "1.9.0"), Ordering::Greater);
    assert_eq!(compare_versions("v2.0.0", "1.99.99"), Ordering::Greater);
    assert_eq!(compare_versions("1.0.0-rc.1", "1.0.0"), Ordering::Less);
    assert_eq!(compare_versions("1.10", "1.9"), Ordering::Greater);
    assert_eq!(compare_versions("build-10", "build-9"), Ordering::Greater);
    assert_eq!(
        compare_versions("2024.05.01-007", "2024.05.01-7"),
        Ordering::Equal
    );
    assert_eq!(compare_versions("abc", "abd"), Ordering::Less);
    assert_eq!(compare_versions("1.2", "1.2.1"), Ordering::Less);
}

#[test]
fn newest_first_by_date_then_version_then_id() {
    let mut images = vec![
        image("ami-old", Some("9.9.9"), Some(100)),
        image("ami-9", Some("1.9.0"), Some(200)),
        image("ami-10", Some("1.10.0"), Some(200)),
        image("ami-undated", Some("10.0.0"), None),
        image("ami-unversioned", None, Some(200)),
    ];
    sort_newest_first(&mut images);
    let order: Vec<_> = images.iter().map(|i| i.image_id.as_str()).collect();
    assert_eq!(
        order,
        [
            "ami-10",
            "ami-9",
            "ami-unversioned",
            "ami-old",
            "ami-undated"
        ]
    );
}

#[tokio::test]
async fn memory_registry_finds_tags_and_refuses_unknown_images() {
    let registry = MemoryRegistry::new();
    assert!(
        registry
            .newest_image("acmeinc/web")
            .await
            .unwrap()
            .is_none()
    );
    registry.add_published(
        "ami-1",
        "acmeinc/web",
        "1.0.0",
        UNIX_EPOCH + Duration::from_secs(10),
    );
    registry.add_untagged("ami-2", UNIX_EPOCH + Duration::from_secs(20));
    registry
        .tag_image("ami-2", "acmeinc/web", "1.1.0")
        .await
        .unwrap();
    let newest = registry.newest_image("acmeinc/web").await.unwrap().unwrap();
    assert_eq!(
        (newest.image_id.as_str(), newest.version.as_deref()),
        ("ami-2", Some("1.1.0"))
    );
    assert_eq!(
        newest.tags.get(VERSION_TAG).map(String::as_str),
        Some("1.1.0")
    );
    assert!(
        registry
            .find_images("acmeinc/api")
            .await
            .unwrap()
            .is_empty()
    );

    let err = registry
        .tag_image("ami-404", "acmeinc/web", "2.0.0")
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    assert!(err.to_string().contains("ami-404"), "{err}");
}

#[tokio::test]
async fn newest_image_skips_images_that_cannot_launch() {
    let registry = MemoryRegistry::new();
    registry.add_published(
        "ami-1",
        "acmeinc/web",
        "1.0.0",
        UNIX_EPOCH + Duration::from_secs(10),
    );
    let mut pending = image("ami-2", Some("1.1.0"), Some(20));
    pending.state = "pending".to_owned();
    registry.insert(pending);
    let newest = registry.newest_image("acmeinc/web").await.unwrap().unwrap();
    assert_eq!(newest.image_id, "ami-1");
    assert_eq!(registry.find_images("acmeinc/web").await.unwrap().len(), 2);
}

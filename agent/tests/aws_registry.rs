//! The AMI registry (`SdkRegistry`) against a real moto server.

use std::time::Duration;

use rollgate::aws::registry::{ARTIFACT_TAG, Registry, SdkRegistry, VERSION_TAG};
use rollgate::aws::sdk::SdkFleet;
use sandbox::moto::{Moto, REGION};

async fn started() -> (Moto, SdkRegistry, aws_sdk_ec2::Client) {
    let moto = Moto::start()
        .await
        .unwrap_or_else(|e| panic!("moto must start: {e}"));
    let registry = SdkFleet::for_endpoint(moto.endpoint(), REGION).registry();
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config());
    (moto, registry, ec2)
}

/// An untagged AMI, as Packer leaves it.
async fn register(ec2: &aws_sdk_ec2::Client, name: &str) -> String {
    ec2.register_image()
        .name(name)
        .root_device_name("/dev/xvda")
        .send()
        .await
        .expect("register image")
        .image_id()
        .expect("image id")
        .to_owned()
}

#[tokio::test]
async fn tagged_images_are_found_newest_first() {
    let (_moto, registry, ec2) = started().await;
    let old_but_high = register(&ec2, "web-2.0.0").await;
    registry
        .tag_image(&old_but_high, "acmeinc/web", "2.0.0")
        .await
        .expect("tag");
    // moto's CreationDate has one-second resolution: be a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let nine = register(&ec2, "web-1.9.0").await;
    let ten = register(&ec2, "web-1.10.0").await;
    registry
        .tag_image(&nine, "acmeinc/web", "1.9.0")
        .await
        .expect("tag");
    registry
        .tag_image(&ten, "acmeinc/web", "1.10.0")
        .await
        .expect("tag");
    registry
        .tag_image(&ten, "acmeinc/web", "1.10.0")
        .await
        .expect("tagging is idempotent");
    let other = register(&ec2, "api-9.9.9").await;
    registry
        .tag_image(&other, "acmeinc/api", "9.9.9")
        .await
        .expect("tag");
    let _untagged = register(&ec2, "scratch").await;

    let images = registry.find_images("acmeinc/web").await.expect("find");
    let order: Vec<&str> = images.iter().map(|i| i.image_id.as_str()).collect();
    // 1.10.0 was registered after 1.9.0: newer either by date (across a
    // second boundary) or, within the same second, by version; 2.0.0 is
    // older by a second whatever its version.
    let (d9, d10) = (images_date(&images, &nine), images_date(&images, &ten));
    assert_eq!(
        order,
        [ten.as_str(), nine.as_str(), old_but_high.as_str()],
        "{d9:?} {d10:?}"
    );
    let newest = registry
        .newest_image("acmeinc/web")
        .await
        .expect("newest")
        .expect("some");
    assert_eq!(newest.image_id, ten);
    assert_eq!(newest.version.as_deref(), Some("1.10.0"));
    assert_eq!(newest.artifact.as_deref(), Some("acmeinc/web"));
    assert_eq!(
        newest.tags.get(ARTIFACT_TAG).map(String::as_str),
        Some("acmeinc/web")
    );
    assert_eq!(
        newest.tags.get(VERSION_TAG).map(String::as_str),
        Some("1.10.0")
    );
    assert_eq!(newest.name, "web-1.10.0");
    assert!(newest.is_available(), "{newest:?}");

    let described = registry
        .describe_image(&other)
        .await
        .expect("describe")
        .expect("exists");
    assert_eq!(described.version.as_deref(), Some("9.9.9"));
}

fn images_date(
    images: &[rollgate::aws::registry::Image],
    id: &str,
) -> Option<std::time::SystemTime> {
    images
        .iter()
        .find(|i| i.image_id == id)
        .and_then(|i| i.creation_date)
}

#[tokio::test]
async fn a_missing_image_is_named() {
    let (_moto, registry, _) = started().await;
    assert!(
        registry
            .describe_image("ami-0123456789abcdef0")
            .await
            .expect("describe")
            .is_none()
    );
    let err = registry
        .tag_image("ami-0123456789abcdef0", "acmeinc/web", "1.0.0")
        .await
        .expect_err("no such image");
    assert!(err.is_not_found(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("ami-0123456789abcdef0") && text.contains("ec2:CreateTags"),
        "{text}"
    );
}

#[tokio::test]
async fn an_artifact_without_images_is_empty() {
    let (_moto, registry, ec2) = started().await;
    let _untagged = register(&ec2, "scratch").await;
    assert!(
        registry
            .find_images("acmeinc/web")
            .await
            .expect("find")
            .is_empty()
    );
    assert!(
        registry
            .newest_image("acmeinc/web")
            .await
            .expect("newest")
            .is_none()
    );
}

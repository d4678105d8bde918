//! The moto harness against a real moto server: start, seed, reset, and no
//! process left behind on shutdown, on drop, or when a test panics.

use std::path::Path;
use std::time::Duration;

use sandbox::moto::seed::{self, ImageSpec, SeedSpec};
use sandbox::moto::{Moto, REGION};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn started() -> Moto {
    Moto::start()
        .await
        .unwrap_or_else(|e| panic!("moto must start for this test: {e}"))
}

#[tokio::test]
async fn seeds_a_group_and_resets() {
    let moto = started().await;
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
    let spec = SeedSpec::new(
        "web",
        ImageSpec::new("acmeinc/web", "1.0.0").tag("sandbox:boot-delay", "2s"),
        3,
    );
    let seeded = seed::seed_group(&moto, &spec)
        .await
        .expect("seed the world");
    assert_eq!(seeded.instance_ids.len(), 3);
    assert!(seeded.image_id.starts_with("ami-"), "{}", seeded.image_id);
    assert!(
        seeded.template_id.starts_with("lt-"),
        "{}",
        seeded.template_id
    );

    let config = moto.sdk_config();
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let image = ec2
        .describe_images()
        .image_ids(&seeded.image_id)
        .send()
        .await
        .expect("describe the image");
    let tags: Vec<(String, String)> = image.images()[0]
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for expected in [
        (seed::ARTIFACT_TAG, "acmeinc/web"),
        (seed::VERSION_TAG, "1.0.0"),
        ("sandbox:boot-delay", "2s"),
    ] {
        assert!(
            tags.iter()
                .any(|(k, v)| (k.as_str(), v.as_str()) == expected),
            "{expected:?} in {tags:?}"
        );
    }
    let instances = ec2
        .describe_instances()
        .set_instance_ids(Some(seeded.instance_ids.clone()))
        .send()
        .await
        .expect("describe the instances");
    let images: Vec<_> = instances
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| i.image_id().unwrap_or_default())
        .collect();
    assert_eq!(images, [seeded.image_id.as_str(); 3]);

    moto.reset().await.expect("reset");
    let groups = aws_sdk_autoscaling::Client::new(&config)
        .describe_auto_scaling_groups()
        .send()
        .await
        .expect("describe groups");
    assert!(
        groups.auto_scaling_groups().is_empty(),
        "reset clears the world"
    );
    assert_eq!(config.region().map(|r| r.as_ref()), Some(REGION));
}

#[tokio::test]
async fn shutdown_and_drop_leave_no_process() {
    let moto = started().await;
    let pid = moto.pid().expect("running");
    assert!(alive(pid));
    moto.shutdown().expect("shut down");
    assert!(!alive(pid), "shutdown reaps moto");

    let moto = started().await;
    let pid = moto.pid().expect("running");
    drop(moto);
    assert!(!alive(pid), "drop reaps moto");
}

#[test]
fn a_panicking_test_leaves_no_process() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let moto = started().await;
            tx.send(moto.pid().expect("running")).expect("send pid");
            panic!("a test failing while moto runs");
        })
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let pid = rx.recv_timeout(Duration::from_secs(1)).expect("pid");
    assert!(!alive(pid), "unwinding dropped and reaped moto");
}

#[tokio::test]
async fn missing_python_or_moto_says_what_to_do() {
    let err = Moto::start_with_python("/nonexistent/python3")
        .await
        .expect_err("no such interpreter");
    assert!(
        err.to_string().contains("sandbox/scripts/prerequisites"),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let fake = dir.path().join("python3");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"ROLLGATE-MOTO-MISSING No module named 'moto'\"\nexit 3\n",
    )
    .expect("write");
    let status = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .expect("chmod");
    assert!(status.success());
    let err = Moto::start_with_python(fake.to_str().expect("utf-8 path"))
        .await
        .expect_err("moto missing");
    let text = err.to_string();
    assert!(
        text.contains("moto is not installed") && text.contains("sandbox/scripts/prerequisites"),
        "{text}"
    );
}

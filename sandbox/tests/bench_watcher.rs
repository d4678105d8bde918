//! The watcher benchmark's scenario at a tiny size: every change must be
//! matched to exactly one enqueued alert. Correctness only: timing is
//! measured by `sandbox bench --scenario watcher`, never asserted here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sandbox::bench::watcher::{WatcherBench, run};
use sandbox::node::Binaries;
use sandbox::testkit;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_matched_to_exactly_one_alert() {
    let bins = Binaries {
        web: std::path::PathBuf::new(),
        rollgate: testkit::binary("rollgate", "rollgate"),
    };
    let dir = tempfile::tempdir().unwrap();
    let settings = WatcherBench {
        instances: 50,
        checks_per_instance: 3,
        nodes: 5,
        changes: 20,
        spread: Duration::from_secs(1),
        drain_limit: Duration::from_secs(60),
    };
    let r = run(settings, &bins, dir.path())
        .await
        .expect("the scenario runs");
    assert_eq!(r.matched, 20);
    assert_eq!(r.latencies.len(), 20);
    assert!(r.unexpected.is_empty(), "{:?}", r.unexpected);
}

//! The fleet simulator against real processes: moto's server, the sandbox
//! Consul in process, and the real `web` and `rollgate` binaries. It follows
//! the group as it grows and shrinks, drains leaving instances, reads
//! behaviour from image tags, retries what cannot start, and leaves no
//! process behind.
//!
//! Consul runs as in production, ACLs on: each instance's agent gets the
//! `agent` role's token (from `config/acl/agent.hcl`) through its token
//! file; the test reads health with a `global-read-only` token.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sandbox::acl_roles::Secret;
use sandbox::consul::{Config as ConsulConfig, Server, ServerHandle};
use sandbox::fleet::{
    BOOT_DELAY_TAG, BROKEN_TAG, Fleet, FleetConfig, FleetHandle, InstanceState,
    VERSION_OVERRIDE_TAG,
};
use sandbox::moto::Moto;
use sandbox::moto::seed::{ImageSpec, SeedSpec, seed_group};
use sandbox::node::Binaries;
use sandbox::testkit::{binary, until};
use serde_json::Value;

/// Logs of the simulator under `RUST_LOG` (e.g. `RUST_LOG=sandbox=debug`),
/// captured per test.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn binaries() -> Binaries {
    logs();
    Binaries {
        web: binary("web", "web"),
        rollgate: binary("rollgate", "rollgate"),
    }
}

/// The sandbox Consul from `config` with ACLs on, a policy and a token per
/// role created from `config/acl/*.hcl`; answers it, the agent role's
/// token, and a client for the test's reads (with a read-only token).
async fn start_consul(config: ConsulConfig) -> (ServerHandle, Secret, reqwest::Client) {
    let management = Secret::random();
    let consul = Server::start(ConsulConfig {
        acl_management_token: Some(management.expose().to_owned()),
        ..config
    })
    .await
    .unwrap();
    let roles = sandbox::acl_roles::create_workspace_roles(consul.http_addr(), &management)
        .await
        .unwrap();
    let read = sandbox::acl_roles::create_read_token(consul.http_addr(), &management, "test reads")
        .await
        .unwrap();
    let http = sandbox::acl_roles::http_client(&read, Duration::from_secs(5)).unwrap();
    (consul, roles.secret("agent").unwrap().clone(), http)
}

fn alive(pid: u32) -> bool {
    sandbox::testkit::process_alive(pid)
}

/// `/v1/health/service/web` entries (all, or passing only).
async fn entries(http: &reqwest::Client, consul: SocketAddr, passing: bool) -> Vec<Value> {
    let filter = if passing { "?passing" } else { "" };
    http.get(format!("http://{consul}/v1/health/service/web{filter}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn instance_ids(entries: &[Value]) -> BTreeSet<String> {
    entries
        .iter()
        .filter_map(|e| e["Service"]["Meta"]["instance_id"].as_str())
        .map(str::to_owned)
        .collect()
}

fn config(
    moto: &Moto,
    group: &str,
    consul: &ServerHandle,
    agent_token: &Secret,
    bins: Binaries,
    dir: &Path,
) -> FleetConfig {
    FleetConfig {
        check_interval: Duration::from_secs(1),
        ttl: Duration::from_secs(3),
        drain_time: Duration::from_secs(1),
        poll: Duration::from_millis(200),
        ..FleetConfig::new(
            moto.sdk_config(),
            group,
            consul.http_addr(),
            bins,
            dir.join(group),
        )
        .with_agent_token(agent_token.clone())
    }
}

/// Every instance and its agent's log, for a failure message.
fn dump(fleet: &FleetHandle) -> String {
    fleet
        .snapshot()
        .iter()
        .map(|i| {
            format!(
                "{i:?}\nagent log:\n{}",
                fleet.agent_log(&i.instance_id).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The process ids of every instance the fleet ever started.
fn pids(fleet: &FleetHandle) -> Vec<u32> {
    fleet
        .snapshot()
        .iter()
        .flat_map(|i| [i.web_pid, i.agent_pid])
        .flatten()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_group_and_drains_leaving_instances() {
    let bins = binaries();
    let work = tempfile::tempdir().unwrap();
    let (consul, agent_token, http) = start_consul(ConsulConfig::default()).await;
    let moto = Moto::start().await.unwrap();
    let seeded = seed_group(
        &moto,
        &SeedSpec::new("web-asg", ImageSpec::new("acmeinc/web", "1.0.0"), 2),
    )
    .await
    .unwrap();
    let fleet = Fleet::start(config(
        &moto,
        "web-asg",
        &consul,
        &agent_token,
        bins,
        work.path(),
    ))
    .unwrap();
    let addr = consul.http_addr();
    let t0 = Instant::now();

    // Two instances, both passing, registered under their instance ids.
    let expected: BTreeSet<String> = seeded.instance_ids.iter().cloned().collect();
    let passing = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let list = entries(&http, addr, true).await;
            if instance_ids(&list) == expected {
                break list;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("both seeded instances pass within 30s; {}", dump(&fleet)));
    for entry in &passing {
        let meta = &entry["Service"]["Meta"];
        assert_eq!(meta["version"], "1.0.0", "{entry}");
        assert_eq!(meta["artifact"], "acmeinc/web", "{entry}");
        assert_eq!(meta["ami_id"], seeded.image_id.as_str(), "{entry}");
        let id = meta["instance_id"].as_str().unwrap();
        assert_eq!(entry["Node"]["Node"], format!("node-{id}"), "{entry}");
    }
    let snapshot = fleet.snapshot();
    assert_eq!(snapshot.len(), 2, "{snapshot:?}");
    assert!(
        snapshot.iter().all(|i| i.state == InstanceState::Running
            && i.version == "1.0.0"
            && i.web_addr.is_some()),
        "{snapshot:?}"
    );
    println!("2 instances passing after {:?}", t0.elapsed());

    // Scale out through the API: a third instance appears and passes.
    let autoscaling = aws_sdk_autoscaling::Client::new(&moto.sdk_config());
    autoscaling
        .set_desired_capacity()
        .auto_scaling_group_name("web-asg")
        .desired_capacity(3)
        .send()
        .await
        .unwrap();
    let t1 = Instant::now();
    let third = until(
        "a third instance passes",
        Duration::from_secs(30),
        || async {
            let ids = instance_ids(&entries(&http, addr, true).await);
            (ids.len() == 3).then(|| ids.difference(&expected).next().cloned())
        },
    )
    .await
    .unwrap();
    println!(
        "third instance {third} passing {:?} after scale-out",
        t1.elapsed()
    );

    // Terminate one with a decrement: its node drains (maintenance, still
    // registered), then leaves Consul.
    let victim = seeded.instance_ids[0].clone();
    autoscaling
        .terminate_instance_in_auto_scaling_group()
        .instance_id(&victim)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .unwrap();
    let t2 = Instant::now();
    until(
        "the terminated instance enters maintenance",
        Duration::from_secs(10),
        || async {
            let all = entries(&http, addr, false).await;
            let entry = all
                .iter()
                .find(|e| e["Service"]["Meta"]["instance_id"] == victim.as_str())?;
            entry["Checks"]
                .as_array()?
                .iter()
                .any(|c| {
                    c["CheckID"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("_service_maintenance"))
                        && c["Status"] == "critical"
                })
                .then_some(())
        },
    )
    .await;
    let draining = fleet
        .snapshot()
        .into_iter()
        .find(|i| i.instance_id == victim)
        .unwrap();
    assert_eq!(draining.state, InstanceState::Draining, "{draining:?}");
    assert!(
        !instance_ids(&entries(&http, addr, true).await).contains(&victim),
        "a draining instance is not passing"
    );
    println!("{victim} in maintenance {:?} after terminate", t2.elapsed());
    until(
        "the terminated instance leaves Consul",
        Duration::from_secs(15),
        || async {
            let gone = !instance_ids(&entries(&http, addr, false).await).contains(&victim)
                && !consul
                    .nodes()
                    .iter()
                    .any(|n| n.name == format!("node-{victim}"));
            let stopped = fleet
                .snapshot()
                .iter()
                .any(|i| i.instance_id == victim && i.state == InstanceState::Stopped);
            (gone && stopped).then_some(())
        },
    )
    .await;
    println!("{victim} gone {:?} after terminate", t2.elapsed());
    assert!(
        draining
            .web_pid
            .into_iter()
            .chain(draining.agent_pid)
            .all(|pid| !alive(pid)),
        "the stopped instance's processes are gone"
    );
    assert_eq!(
        instance_ids(&entries(&http, addr, true).await).len(),
        2,
        "the other two keep passing"
    );

    // Shutdown drains the rest and leaves no process and no node behind.
    let pids = pids(&fleet);
    assert_eq!(pids.len(), 6, "3 instances x (web + agent)");
    let counters = fleet.counters();
    assert_eq!((counters.started, counters.stopped), (3, 1), "{counters:?}");
    let t3 = Instant::now();
    fleet.shutdown().await;
    println!("shutdown took {:?}", t3.elapsed());
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived the fleet");
    }
    assert!(consul.nodes().is_empty(), "{:?}", consul.nodes());
    assert!(entries(&http, addr, false).await.is_empty());
    consul.shutdown().await;
    moto.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_tags_decide_how_an_instance_behaves() {
    let bins = binaries();
    let work = tempfile::tempdir().unwrap();
    // The half-baked instance's check goes from critical (as registered) to
    // critical naming both versions: an output-only change, which Consul
    // syncs to the catalog only after check_update_interval (minutes).
    // Synced at once here, so the test can read the output in seconds.
    let (consul, agent_token, http) = start_consul(ConsulConfig::default().fast_timings()).await;
    let moto = Moto::start().await.unwrap();
    let addr = consul.http_addr();

    let mut fleets = Vec::new();
    let mut ids = Vec::new();
    for (group, image) in [
        (
            "broken",
            ImageSpec::new("acmeinc/web", "2.0.0").tag(BROKEN_TAG, "true"),
        ),
        (
            "half-baked",
            ImageSpec::new("acmeinc/web", "2.0.1").tag(VERSION_OVERRIDE_TAG, "1.9.9"),
        ),
        (
            "slow",
            ImageSpec::new("acmeinc/web", "2.0.2").tag(BOOT_DELAY_TAG, "2s"),
        ),
    ] {
        let seeded = seed_group(&moto, &SeedSpec::new(group, image, 1))
            .await
            .unwrap();
        ids.push(seeded.instance_ids[0].clone());
        fleets.push(
            Fleet::start(config(
                &moto,
                group,
                &consul,
                &agent_token,
                bins.clone(),
                work.path(),
            ))
            .unwrap(),
        );
    }
    let (broken, half_baked, slow) = (&ids[0], &ids[1], &ids[2]);

    // The slow image's instance boots for 2 s.
    let booting = until(
        "the slow instance starts",
        Duration::from_secs(20),
        || async {
            fleets[2]
                .snapshot()
                .into_iter()
                .find(|i| i.web_addr.is_some())
        },
    )
    .await;
    assert_eq!(booting.state, InstanceState::Booting, "{booting:?}");
    let started = Instant::now();

    // All three register; the broken and half-baked ones with failing checks.
    until("all three register", Duration::from_secs(20), || async {
        (instance_ids(&entries(&http, addr, false).await).len() == 3).then_some(())
    })
    .await;
    let check = |entries: &[Value], id: &str, suffix: &str| -> Option<(String, String)> {
        let entry = entries
            .iter()
            .find(|e| e["Service"]["Meta"]["instance_id"] == id)?;
        entry["Checks"].as_array()?.iter().find_map(|c| {
            c["CheckID"].as_str()?.ends_with(suffix).then(|| {
                (
                    c["Status"].as_str().unwrap_or_default().to_owned(),
                    c["Output"].as_str().unwrap_or_default().to_owned(),
                )
            })
        })
    };
    until(
        "the broken and half-baked checks report why",
        Duration::from_secs(20),
        || async {
            let all = entries(&http, addr, false).await;
            let (broken_status, _) = check(&all, broken, ":http")?;
            let (half_status, half_output) = check(&all, half_baked, ":agent")?;
            (broken_status == "critical"
                && half_status == "critical"
                && half_output.contains("1.9.9"))
            .then_some(())
        },
    )
    .await;

    // The slow one passes, not before its boot delay; the others never do.
    // Watched for at least 3 s (several check intervals), at most 10 s.
    let mut slow_passed = None;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(10)
        && (slow_passed.is_none() || watch.elapsed() < Duration::from_secs(3))
    {
        let passing = instance_ids(&entries(&http, addr, true).await);
        assert!(
            !passing.contains(broken),
            "the broken image's instance passed"
        );
        assert!(
            !passing.contains(half_baked),
            "the half-baked image's instance passed"
        );
        if slow_passed.is_none() && passing.contains(slow) {
            slow_passed = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow_passed = slow_passed.expect("the slow instance passes after its boot delay");
    assert!(
        slow_passed >= Duration::from_millis(1500),
        "passed {slow_passed:?} after start, before its 2s boot delay"
    );
    assert_eq!(fleets[2].snapshot()[0].state, InstanceState::Running);
    let half = &fleets[1].snapshot()[0];
    assert_eq!(
        (half.version.as_str(), half.reported_version.as_str()),
        ("2.0.1", "1.9.9")
    );

    let mut all_pids = Vec::new();
    for fleet in fleets {
        all_pids.extend(pids(&fleet));
        fleet.shutdown().await;
    }
    assert_eq!(all_pids.len(), 6);
    for pid in all_pids {
        assert!(!alive(pid), "process {pid} outlived the fleet");
    }
    assert!(consul.nodes().is_empty());
    consul.shutdown().await;
    moto.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_that_cannot_start_or_run_are_reported() {
    logs();
    let work = tempfile::tempdir().unwrap();
    let (consul, agent_token, _) = start_consul(ConsulConfig::default()).await;
    let moto = Moto::start().await.unwrap();
    seed_group(
        &moto,
        &SeedSpec::new("web-asg", ImageSpec::new("acmeinc/web", "1.0.0"), 1),
    )
    .await
    .unwrap();
    let missing = Binaries {
        web: work.path().join("no-such-web"),
        rollgate: work.path().join("no-such-rollgate"),
    };
    let fleet = Fleet::start(config(
        &moto,
        "web-asg",
        &consul,
        &agent_token,
        missing,
        work.path(),
    ))
    .unwrap();
    until("two failed attempts", Duration::from_secs(20), || async {
        (fleet.counters().start_failures >= 2).then_some(())
    })
    .await;
    let counters = fleet.counters();
    assert_eq!(counters.started, 0, "{counters:?}");
    // Each failed attempt removed the Consul node it added.
    until(
        "no node left by a failed start",
        Duration::from_secs(5),
        || async { consul.nodes().is_empty().then_some(()) },
    )
    .await;
    fleet.shutdown().await;
    assert!(consul.nodes().is_empty());

    // An agent that exits on its own (here: not an agent at all) is
    // reported on the instance, which never passes.
    seed_group(
        &moto,
        &SeedSpec::new("agent-dies", ImageSpec::new("acmeinc/web", "1.0.0"), 1),
    )
    .await
    .unwrap();
    let dying = Binaries {
        web: binary("web", "web"),
        rollgate: "/bin/false".into(),
    };
    let fleet = Fleet::start(config(
        &moto,
        "agent-dies",
        &consul,
        &agent_token,
        dying,
        work.path(),
    ))
    .unwrap();
    let reported = until(
        "the agent's exit is reported",
        Duration::from_secs(20),
        || async {
            fleet
                .snapshot()
                .into_iter()
                .find(|i| i.agent_exit.is_some())
        },
    )
    .await;
    assert!(
        reported.agent_exit.as_deref().unwrap().contains('1'),
        "{reported:?}"
    );
    assert_eq!(fleet.counters().started, 1);
    fleet.shutdown().await;
    assert!(consul.nodes().is_empty());
    consul.shutdown().await;
    moto.shutdown().unwrap();
}

#[tokio::test]
async fn refuses_anything_off_loopback() {
    let work = tempfile::tempdir().unwrap();
    let bins = Binaries {
        web: work.path().join("web"),
        rollgate: work.path().join("rollgate"),
    };
    let aws = aws_config::SdkConfig::builder()
        .endpoint_url("http://127.0.0.1:5000")
        .build();
    let off = FleetConfig::new(
        aws.clone(),
        "g",
        SocketAddr::from(([10, 0, 0, 1], 8500)),
        bins.clone(),
        work.path(),
    );
    assert!(Fleet::start(off).is_err());
    let real_aws = FleetConfig::new(
        aws_config::SdkConfig::builder().build(),
        "g",
        SocketAddr::from(([127, 0, 0, 1], 8500)),
        bins.clone(),
        work.path(),
    );
    let err = Fleet::start(real_aws).unwrap_err();
    assert!(err.to_string().contains("endpoint"), "{err}");
    let remote_aws = FleetConfig::new(
        aws_config::SdkConfig::builder()
            .endpoint_url("https://autoscaling.us-east-1.amazonaws.com")
            .build(),
        "g",
        SocketAddr::from(([127, 0, 0, 1], 8500)),
        bins,
        work.path(),
    );
    assert!(Fleet::start(remote_aws).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_fleet_kills_its_processes() {
    let bins = binaries();
    let work = tempfile::tempdir().unwrap();
    let (consul, agent_token, _) = start_consul(ConsulConfig::default()).await;
    let moto = Moto::start().await.unwrap();
    seed_group(
        &moto,
        &SeedSpec::new("web-asg", ImageSpec::new("acmeinc/web", "1.0.0"), 1),
    )
    .await
    .unwrap();
    let fleet = Fleet::start(config(
        &moto,
        "web-asg",
        &consul,
        &agent_token,
        bins,
        work.path(),
    ))
    .unwrap();
    let pids = until("the instance starts", Duration::from_secs(20), || async {
        let pids = pids(&fleet);
        (pids.len() == 2).then_some(pids)
    })
    .await;
    drop(fleet);
    until(
        "the dropped fleet's processes are gone",
        Duration::from_secs(5),
        || async { pids.iter().all(|&pid| !alive(pid)).then_some(()) },
    )
    .await;
    consul.shutdown().await;
    moto.shutdown().unwrap();
}

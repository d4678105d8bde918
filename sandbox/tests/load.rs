//! The load generator against real nodes (the real `web` and `rollgate
//! agent` processes) registered in the sandbox Consul: steady load has no
//! failures, an app that dies without draining shows up as failures with
//! target and cause, and a drained stop costs nothing. Consul runs with
//! ACLs on: the agents hold the agent role's token, the load generator and
//! the test's reads a read-only one.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use sandbox::acl_roles::{Secret, create_read_token, create_workspace_roles, http_client};
use sandbox::consul::{Config as ConsulConfig, Server, ServerHandle};
use sandbox::imds::Identity;
use sandbox::load::{FailureCause, Load, LoadConfig, LoadReport};
use sandbox::node::{Binaries, NodeSpec, SimNode};
use sandbox::testkit::{binary, until};
use tempfile::TempDir;

struct World {
    consul: ServerHandle,
    /// The read-only token for the load generator.
    read: Secret,
    nodes: Vec<SimNode>,
    _dir: TempDir,
}

/// The sandbox Consul with two client nodes, and a passing node on each.
async fn two_passing_nodes() -> World {
    let bins = Binaries {
        web: binary("web", "web"),
        rollgate: binary("rollgate", "rollgate"),
    };
    let dir = tempfile::tempdir().unwrap();
    let management = Secret::random();
    let consul = Server::start(ConsulConfig {
        nodes: 2,
        ..ConsulConfig::with_acls(management.expose())
    })
    .await
    .unwrap();
    let roles = create_workspace_roles(consul.http_addr(), &management)
        .await
        .unwrap();
    let agent_token = roles
        .write_file("agent", &dir.path().join("agent.token"))
        .unwrap();
    let read = create_read_token(consul.http_addr(), &management, "load test reads")
        .await
        .unwrap();
    let mut nodes = Vec::new();
    for (n, agent) in consul.nodes().iter().enumerate() {
        let spec = NodeSpec {
            identity: Identity {
                instance_id: format!("i-load{n:013}"),
                ami_id: "ami-0load000000000001".into(),
                availability_zone: "us-east-1a".into(),
                region: "us-east-1".into(),
                local_ipv4: Ipv4Addr::LOCALHOST,
                instance_type: "t3.micro".into(),
                account_id: "123456789012".into(),
            },
            consul: agent.addr,
            web_env: vec![("WEB_VERSION".into(), "1.0.0".into())],
            expected_version: "1.0.0".into(),
            artifact: "acmeinc/web".into(),
            check_interval: Duration::from_secs(1),
            ttl: Duration::from_secs(3),
            drain_time: Duration::from_secs(1),
            dir: dir.path().join(format!("node-{n}")),
            token_file: Some(agent_token.clone()),
            ready_listen: None,
        };
        nodes.push(SimNode::start(&bins, &spec).await.unwrap());
    }
    let http = http_client(&read, Duration::from_secs(10)).unwrap();
    let url = format!(
        "http://{}/v1/health/service/web?passing",
        consul.http_addr()
    );
    until("both nodes pass", Duration::from_secs(30), || async {
        let list: Vec<serde_json::Value> = http.get(&url).send().await.ok()?.json().await.ok()?;
        (list.len() == 2).then_some(())
    })
    .await;
    World {
        consul,
        read,
        nodes,
        _dir: dir,
    }
}

fn load(world: &World, seconds: u64) -> LoadConfig {
    LoadConfig {
        token: Some(world.read.clone()),
        rate_per_sec: 50,
        timeout: Duration::from_secs(2),
        stop_after: Some(Duration::from_secs(seconds)),
        bucket: Duration::from_millis(100),
        ..LoadConfig::new(world.consul.http_addr())
    }
}

fn summary(report: &LoadReport) -> String {
    format!(
        "sent {} ok {} failed {} min targets {} per target {:?} first failures {:?}",
        report.sent,
        report.ok,
        report.failed,
        report.min_targets_seen,
        report.per_target,
        report.failures.iter().take(5).collect::<Vec<_>>()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_on_passing_nodes_has_no_failures() {
    let world = two_passing_nodes().await;
    let handle = Load::start(load(&world, 3)).await.unwrap();
    let mut targets = handle.targets();
    targets.sort();
    let mut expected: Vec<SocketAddr> = world.nodes.iter().map(|n| n.web_addr).collect();
    expected.sort();
    assert_eq!(targets, expected);
    let report = handle.finish().await;
    println!("{}", summary(&report));
    assert!(
        (130..=160).contains(&report.sent),
        "about 150 sent: {}",
        summary(&report)
    );
    assert_eq!(report.failed, 0, "{}", summary(&report));
    assert_eq!(report.ok, report.sent);
    assert_eq!(report.min_targets_seen, 2);
    // Round-robin: both targets get half.
    for stats in report.per_target.values() {
        assert!(
            stats.sent.abs_diff(report.sent / 2) <= 1,
            "{:?}",
            report.per_target
        );
    }
    // The series covers the run and adds up.
    assert!(
        (29..=31).contains(&report.series.len()),
        "{}",
        report.series.len()
    );
    assert_eq!(
        report.series.iter().map(|s| s.sent).sum::<u64>(),
        report.sent
    );
    assert_eq!(report.series.iter().map(|s| s.ok).sum::<u64>(), report.ok);
    assert!(report.series.iter().all(|s| s.targets_min == 2));
    for node in world.nodes {
        node.stop(Duration::from_secs(5)).await;
    }
    world.consul.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_killed_without_draining_shows_up_as_failures() {
    let mut world = two_passing_nodes().await;
    let handle = Load::start(load(&world, 4)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = world.nodes.remove(0);
    let dead = victim.web_addr;
    let pid = victim.web_pid().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let killed_at = handle.report().elapsed;
    // Consul takes it out of the passing set within a check interval or so.
    until(
        "the killed node leaves the targets",
        Duration::from_secs(10),
        || async { (!handle.targets().contains(&dead)).then_some(()) },
    )
    .await;
    let report = handle.finish().await;
    println!("{}", summary(&report));
    assert!(report.failed > 0, "{}", summary(&report));
    assert_eq!(report.ok + report.failed, report.sent);
    assert_eq!(report.min_targets_seen, 1);
    for failure in &report.failures {
        assert_eq!(failure.target, Some(dead), "{failure:?}");
        assert!(
            matches!(
                failure.cause,
                FailureCause::Connect(_) | FailureCause::Transport(_)
            ),
            "{failure:?}"
        );
        assert!(
            failure.at + Duration::from_millis(100) >= killed_at,
            "{failure:?}"
        );
    }
    let last = report.failures.iter().map(|f| f.at).max().unwrap();
    println!(
        "{} failures from {killed_at:?} to {last:?}; first cause: {}",
        report.failed, report.failures[0].cause
    );
    assert!(
        last < killed_at + Duration::from_secs(3),
        "failures stop once Consul marks it critical: last at {last:?}"
    );
    assert!(
        report
            .series
            .iter()
            .any(|s| s.failed > 0 && s.targets_max == 2)
    );
    assert!(report.series.last().unwrap().targets_max == 1);
    drop(victim);
    for node in world.nodes {
        node.stop(Duration::from_secs(5)).await;
    }
    world.consul.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_stop_costs_no_request() {
    let mut world = two_passing_nodes().await;
    let handle = Load::start(load(&world, 4)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leaving = world.nodes.remove(0);
    let gone = leaving.web_addr;
    // Maintenance, 1 s drain while still serving, deregister, then exit.
    leaving.stop(Duration::from_secs(10)).await;
    let report = handle.finish().await;
    println!("{}", summary(&report));
    assert_eq!(report.failed, 0, "{}", summary(&report));
    assert_eq!(report.ok, report.sent);
    assert_eq!(report.min_targets_seen, 1);
    let to_gone = report.per_target[&gone];
    assert!(to_gone.sent > 0 && to_gone.failed == 0, "{to_gone:?}");
    for node in world.nodes {
        node.stop(Duration::from_secs(5)).await;
    }
    world.consul.shutdown().await;
}

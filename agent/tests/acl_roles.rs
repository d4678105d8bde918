//! Each role's policy file, end to end against the sandbox Consul with ACLs
//! on (`default_policy = "deny"`): a token made from exactly the file does
//! everything the role does, and a token made from the file with any one
//! rule removed fails loudly, naming that rule's permission.
//!
//! - coordinator and watcher: the real leader lock, the real record stores
//!   (fenced `PUT /v1/txn` writes), the watcher's state store, the outbox,
//!   the chunk calls of a large watcher state, and the health reads;
//! - agent: the real `rollgate agent` binary registers and passes;
//! - operator and ci: the real `rollgate` binary's `plan`, `history`,
//!   `status [--wait]`, `approve`, `reject`, `pause`, `resume`, `promote`,
//!   `abort` against seeded plans and a seeded rollout, and the publish
//!   trigger write (`Store::write_trigger`, what `rollgate publish` writes
//!   after tagging the image in AWS, which this test has no emulator for).
//!
//! The cases with one rule removed are generated from the parsed file, so a
//! rule added to a file adds a case. Removing a read rule from a list or
//! health read does not make Consul refuse: it filters the answer and sets
//! `X-Consul-Results-Filtered-By-ACLs`. Those cases assert what rollgate
//! does then: the record store refuses the partial list (naming `key:read`),
//! the gate refuses the partial health (naming `service:read` and
//! `node:read`), and the watcher's health answer is marked partial.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rollgate::alerting::store::StateStore;
use rollgate::config::{ConsulConfig, Secret as ConsulSecret};
use rollgate::consul::health::HealthState;
use rollgate::consul::kv::PutOptions;
use rollgate::consul::lock::{LeaderLock, LockConfig};
use rollgate::consul::permissions::{Access, Resource, Role, Rule};
use rollgate::consul::records::{Record, Records, decode};
use rollgate::consul::types::CheckStatus;
use rollgate::consul::{Client, QueryOptions};
use rollgate::coordinator::liveness;
use rollgate::notify::Outbox;
use rollgate::notify::config::NotifyConfig;
use rollgate::notify::event::{AlertStatus, Event, MetaKind, MetaNotice};
use rollgate::rollout::executor::ExecError;
use rollgate::rollout::machine::Rollout;
use rollgate::rollout::plan::{Decision, Outcome, Plan, now_ms};
use rollgate::rollout::store::{Store, Trigger};
use sandbox::acl_roles::Secret;
use sandbox::consul::{Config as ServerConfig, Server, ServerHandle};
use sandbox::imds::{self, Identity};
use sandbox::testkit::{LoggedChild, until};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "rollgate";
const PLAN_V1: &str = include_str!("../src/rollout/store/testdata/plan_v1.json");
const ROLLOUT_V1: &str = include_str!("../src/rollout/store/testdata/rollout_v1.json");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

/// The rules of a role's policy file, parsed as Consul's rule language.
fn policy_rules(role: Role) -> Vec<Rule> {
    let path = workspace().join(role.policy_file());
    let text = std::fs::read_to_string(&path).unwrap();
    let body: hcl::Body = hcl::from_str(&text).unwrap();
    body.blocks()
        .map(|block| {
            let (resource, prefix) = Resource::of_block(block.identifier.as_str())
                .unwrap_or_else(|| panic!("{}: {}", path.display(), block.identifier.as_str()));
            let policy = block
                .body
                .attributes()
                .find(|a| a.key.as_str() == "policy")
                .and_then(|a| match &a.expr {
                    hcl::Expression::String(s) => Access::parse(s),
                    _ => None,
                })
                .expect("read or write");
            Rule {
                resource,
                prefix,
                name: block.labels[0].as_str().to_owned(),
                access: policy,
            }
        })
        .collect()
}

fn hcl_of(rules: &[Rule]) -> String {
    rules.iter().map(Rule::to_hcl).collect()
}

/// The sandbox Consul with ACLs on, and the management token to create
/// policies and tokens with.
struct Acl {
    consul: ServerHandle,
    management: Secret,
    http: reqwest::Client,
}

impl Acl {
    async fn start() -> Self {
        let management = Secret::random();
        let consul = Server::start(ServerConfig {
            nodes: 1,
            ..ServerConfig::with_acls(management.expose())
        })
        .await
        .unwrap();
        let http = sandbox::acl_roles::http_client(&management, Duration::from_secs(10)).unwrap();
        Self {
            consul,
            management,
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.consul.http_addr())
    }

    /// A token holding one new policy with `rules`; answers its SecretID.
    async fn token(&self, name: &str, rules: &str) -> Secret {
        let resp = self
            .http
            .put(self.url("/v1/acl/policy"))
            .json(&json!({ "Name": name, "Rules": rules }))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "policy {name}: {}",
            resp.text().await.unwrap()
        );
        let resp = self
            .http
            .put(self.url("/v1/acl/token"))
            .json(&json!({ "Description": name, "Policies": [{ "Name": name }] }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "token {name}");
        let body: serde_json::Value = resp.json().await.unwrap();
        Secret::new(body["SecretID"].as_str().unwrap())
    }

    fn client_at(&self, addr: SocketAddr, token: &Secret) -> Client {
        Client::new(&ConsulConfig {
            address: format!("http://{addr}"),
            token: Some(ConsulSecret::new(token.expose())),
            ..ConsulConfig::default()
        })
        .unwrap()
    }

    fn client(&self, token: &Secret) -> Client {
        self.client_at(self.consul.http_addr(), token)
    }

    fn admin(&self) -> Client {
        self.client(&self.management)
    }

    /// A passing `web` instance and a critical `api` one, so health answers
    /// have something to filter.
    fn register_services(&self) {
        let node = self.consul.nodes()[0].name.clone();
        let service = |name: &str, status: &str| {
            json!({
                "ID": format!("{name}-1"), "Name": name, "Port": 80,
                "Meta": { "instance_id": format!("i-{name}") },
                "Check": { "CheckID": format!("{name}-1:ttl"), "Name": "ttl", "TTL": "10m", "Status": status },
            })
        };
        self.consul
            .register_services(
                &node,
                &[service("web", "passing"), service("api", "critical")],
            )
            .unwrap();
    }

    async fn shutdown(self) {
        self.consul.shutdown().await;
    }
}

/// What a failure must name when `rule` is missing: its permission (or,
/// for a write rule, the read its first call needs) and its name.
fn names_rule(error: &str, rule: &Rule) -> bool {
    let kind = rule.resource.as_str();
    let permission = error.contains(&format!("{kind}:read"))
        || (rule.access == Access::Write && error.contains(&format!("{kind}:write")));
    let named = rule.name.is_empty() || error.contains(&rule.name);
    permission && named
}

// ---------------------------------------------------------------------------
// Coordinator and watcher: the daemons' own Consul work, in process.

/// What the in-process rollgate code logged (warnings and errors), for
/// failures it reports by logging and retrying rather than returning.
static LOG: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut log) = LOG.lock() {
            log.push_str(&String::from_utf8_lossy(buf));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| LogWriter)
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .try_init();
}

/// The logged lines that mention `about`.
fn logged(about: &str) -> String {
    LOG.lock()
        .map(|log| {
            log.lines()
                .filter(|l| l.contains(about))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Any record, to list records whatever their type (only their presence
/// matters here).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
struct Anything(serde_json::Value);

impl Record for Anything {
    const KIND: &'static str = "test entry";
    const SCHEMA: u32 = u32::MAX;
}

/// Takes the role's leader lock and does its work under it.
async fn lock_and_work(client: &Client, role: Role) -> Result<(), String> {
    let lock_key = match role {
        Role::Coordinator => format!("{PREFIX}/leader"),
        _ => format!("{PREFIX}/watch/leader"),
    };
    // The coordinator ties its session to its own liveness check
    // (coordinator/liveness.rs): registered, refreshed and, at a clean stop,
    // deregistered through its local agent.
    let liveness = if role == Role::Coordinator {
        let registration = liveness::registration("acl-test", Duration::from_secs(10));
        client
            .register_service(&registration)
            .await
            .map_err(|e| format!("liveness check: {e}"))?;
        let check = registration.checks[0].check_id.clone();
        client
            .update_check(&check, CheckStatus::Passing, "alive")
            .await
            .map_err(|e| format!("liveness refresh: {e}"))?;
        Some((registration.id, check))
    } else {
        None
    };
    let lock = LeaderLock::new(
        client.clone(),
        LockConfig {
            ttl: Duration::from_secs(10),
            lock_delay: Duration::ZERO,
            checks: liveness.iter().map(|(_, check)| check.clone()).collect(),
            ..LockConfig::new(lock_key.clone(), format!("acl-test-{role}"))
        },
    );
    let cancel = CancellationToken::new();
    let leadership = tokio::time::timeout(Duration::from_secs(5), lock.acquire(&cancel))
        .await
        // The lock keeps trying a token that created its session (it may
        // have been revoked since, and may come back), and says why in its
        // log.
        .map_err(|_| {
            format!(
                "the leader lock {lock_key:?} was not acquired within 5s; rollgate logged:\n{}",
                logged(&format!("\"{lock_key}\""))
            )
        })?
        .map_err(|e| format!("leader lock: {e}"))?
        .ok_or("leader lock: no leadership")?;
    let fence = leadership.fence().clone();
    let result = work(client, role, fence).await;
    let released = leadership
        .release()
        .await
        .map_err(|e| format!("release: {e}"));
    let deregistered = match liveness {
        Some((service, _)) => client
            .deregister_service(&service)
            .await
            .map_err(|e| format!("liveness deregistration: {e}")),
        None => Ok(()),
    };
    result.and(released).and(deregistered)
}

async fn work(
    client: &Client,
    role: Role,
    fence: rollgate::consul::lock::Fence,
) -> Result<(), String> {
    // The watcher's state, written under the fence.
    let mut state = StateStore::new(client.clone(), PREFIX);
    state.fence(Some(fence.clone()));
    let gate_fence = fence;
    let (s, index) = state
        .load()
        .await
        .map_err(|e| format!("watcher state load: {e}"))?;
    state
        .save(&s, index)
        .await
        .map_err(|e| format!("watcher state save: {e}"))?;
    // A large state's chunks: written, listed, deleted as the state store
    // does (`kv_put`, `kv_list`, `kv_delete ?recurse`).
    let folder = format!("{PREFIX}/watch/state-chunks/acl-test/");
    client
        .kv_put(&format!("{folder}0"), b"{}", &PutOptions::default())
        .await
        .map_err(|e| format!("chunk write: {e}"))?;
    let chunks = Records::new(client.clone())
        .list::<Anything>(&folder)
        .await
        .map_err(|e| format!("chunk list: {e}"))?;
    if chunks.is_empty() {
        return Err("chunk list: the chunk just written is not listed".into());
    }
    client
        .kv_delete(&folder, None, true)
        .await
        .map_err(|e| format!("chunk delete: {e}"))?;
    // The outbox: an event enqueued (`cas=0`) and listed.
    // Routed to a receiver by default, or nothing would be enqueued.
    let notify = NotifyConfig {
        default_receivers: vec!["ops".into()],
        ..NotifyConfig::default()
    };
    let outbox = Outbox::new(client.clone(), PREFIX, &notify);
    let event = Event::meta(
        MetaNotice {
            kind: MetaKind::NoLeader,
            status: AlertStatus::Firing,
            since_ms: now_ms(),
            detail: format!("acl test of the {role}"),
        },
        now_ms(),
    );
    outbox
        .enqueue(event)
        .await
        .map_err(|e| format!("outbox enqueue: {e}"))?;
    let listed = outbox.records().list::<Anything>(outbox.prefix()).await;
    match listed {
        Ok(l) if !l.is_empty() => {}
        Ok(_) => return Err("outbox list: the event just enqueued is not listed".into()),
        Err(e) => return Err(format!("outbox list: {e}")),
    }
    if role == Role::Coordinator {
        coordinator_work(client, gate_fence).await?;
    }
    // The watcher's one health read: a partial answer is marked.
    let health = client
        .health_state(HealthState::Any, &QueryOptions::default())
        .await
        .map_err(|e| format!("health state: {e}"))?;
    if health.meta.filtered_by_acls {
        return Err(
            "GET /v1/health/state/any: Consul hid checks from this token \
             (X-Consul-Results-Filtered-By-ACLs): it lacks service:read or node:read"
                .into(),
        );
    }
    Ok(())
}

/// The coordinator's own records and its gate.
async fn coordinator_work(
    client: &Client,
    fence: rollgate::consul::lock::Fence,
) -> Result<(), String> {
    // The coordinator's records, fenced: the plan counter, plans, rollout,
    // the publish trigger it blocks on.
    let store = Store::new(client.clone(), PREFIX).fenced(fence);
    store
        .next_plan_id("web")
        .await
        .map_err(|e| format!("next plan id: {e}"))?;
    store
        .plans("web")
        .await
        .map_err(|e| format!("plans: {e}"))?;
    store
        .rollout("web")
        .await
        .map_err(|e| format!("rollout: {e}"))?;
    client
        .kv_get(&store.trigger_key("acmeinc/web"), &QueryOptions::default())
        .await
        .map_err(|e| format!("trigger: {e}"))?;
    // The gate: the service's health, never read from a partial answer.
    let entries = client
        .health_service("web", false, None, &QueryOptions::default())
        .await
        .map_err(|e| format!("gate health: {e}"))?;
    if entries.meta.filtered_by_acls {
        return Err(ExecError::HiddenByAcls {
            service: "web".into(),
        }
        .to_string());
    }
    if entries.value.is_empty() {
        return Err("gate health: no instance of web".into());
    }
    Ok(())
}

async fn daemon_role(role: Role) {
    capture_logs();
    let acl = Acl::start().await;
    acl.register_services();
    let rules = policy_rules(role);
    assert!(!rules.is_empty());
    let full = acl.token(&format!("{role}-full"), &hcl_of(&rules)).await;
    lock_and_work(&acl.client(&full), role)
        .await
        .unwrap_or_else(|e| panic!("the {role} with exactly {}: {e}", role.policy_file()));
    for (i, removed) in rules.iter().enumerate() {
        let mut less = rules.clone();
        less.remove(i);
        let token = acl
            .token(&format!("{role}-without-{i}"), &hcl_of(&less))
            .await;
        let e = match lock_and_work(&acl.client(&token), role).await {
            Ok(()) => panic!(
                "the {role} without `{removed}` of {} did all its work: the rule is not needed, or the test misses the call",
                role.policy_file()
            ),
            Err(e) => e,
        };
        assert!(
            names_rule(&e, removed),
            "the {role} without `{removed}` failed without naming {} on {:?}: {e}",
            removed.permission(),
            removed.name
        );
    }
    acl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_policy_is_enough_and_every_rule_is_needed() {
    daemon_role(Role::Coordinator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_policy_is_enough_and_every_rule_is_needed() {
    daemon_role(Role::Watcher).await;
}

// ---------------------------------------------------------------------------
// Operator and CI: the real binary.

/// Plans `web-1` and `web-2` and, when `rollout`, an active rollout of
/// `web-1`; with `succeeded`, `web-1` succeeded and no rollout.
async fn seed(acl: &Acl, rollout: bool, succeeded: bool) {
    let store = Store::new(acl.admin(), PREFIX);
    for n in 1..=2 {
        let mut plan: Plan = decode("seed", PLAN_V1.as_bytes()).unwrap();
        plan.id = format!("web-{n}");
        plan.service = "web".into();
        plan.decision = Decision::Pending {
            expires_at: now_ms() + 3_600_000,
        };
        plan.outcome = None;
        if succeeded && n == 1 {
            plan.decision = Decision::Approved {
                by: "alice".into(),
                at: now_ms(),
            };
            plan.outcome = Some(Outcome::Succeeded { at: now_ms() });
        }
        assert!(store.create_plan(&plan).await.unwrap());
        if succeeded {
            break;
        }
    }
    // An image that failed: publish and rollback read the marks.
    store
        .mark_failed("web", "ami-0failed", "seeded for the ACL test")
        .await
        .unwrap();
    if rollout {
        let mut r: Rollout = decode("seed", ROLLOUT_V1.as_bytes()).unwrap();
        r.spec.id = "web-1".into();
        r.spec.service = "web".into();
        Records::new(acl.admin())
            .put(&store.rollout_key("web"), &r)
            .await
            .unwrap();
    }
}

fn cli_config(dir: &Path, acl: &Acl, token: &Secret, name: &str) -> PathBuf {
    let token_file = dir.join(format!("{name}.token"));
    token.write_file(&token_file).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[consul]\naddress = \"http://{}\"\ntoken_file = {:?}\n\n\
             [[services]]\nname = \"web\"\nauto_scaling_group = \"web\"\n\
             launch_template = \"web\"\nartifact = \"acmeinc/web\"\n\n\
             [agent]\nexpected_version = \"1.0.0\"\n",
            acl.consul.http_addr(),
            token_file.display().to_string()
        ),
    )
    .unwrap();
    path
}

/// Runs the role's commands in order; the first failure's output.
async fn cli_work(config: &Path, client: &Client, role: Role) -> Result<(), String> {
    let commands: &[&[&str]] = match role {
        Role::Ci => &[&["status", "web", "--wait"]],
        _ => &[
            &["plan", "web"],
            &["history", "web"],
            &["status", "web"],
            &["approve", "web-1"],
            &["reject", "web-2", "--reason", "acl test"],
            &["pause", "web"],
            &["resume", "web"],
            &["promote", "web"],
            &["abort", "web"],
        ],
    };
    for args in commands {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_rollgate"))
                .arg("--config")
                .arg(config)
                .args(*args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("USER", "acl-test")
                .output(),
        )
        .await
        .map_err(|_| format!("rollgate {args:?} did not finish in 30s"))?
        .unwrap();
        if !out.status.success() {
            return Err(format!(
                "rollgate {} exited {:?}: {}{}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    // What `rollgate publish` and `rollback` read before they claim
    // anything, and what `rollback` and `publish --force` write: the plan ID.
    let store = Store::new(client.clone(), PREFIX);
    store
        .failed_images("web")
        .await
        .map_err(|e| format!("failed images: {e}"))?;
    if role == Role::Operator {
        store
            .next_plan_id("web")
            .await
            .map_err(|e| format!("plan ID: {e}"))?;
    }
    // What `rollgate publish` writes once the image is tagged.
    Store::new(client.clone(), PREFIX)
        .write_trigger(
            "acmeinc/web",
            &Trigger {
                image_id: "ami-0acl".into(),
                version: "9.9.9".into(),
                at: now_ms(),
            },
        )
        .await
        .map_err(|e| format!("publish trigger: {e}"))
}

/// The console as an operator uses it: a console started as a
/// coordinator replica starts it, every documented `GET` route read with the
/// operator's token (`X-Consul-Token`), each answering 200 with nothing
/// hidden (the stable version, the outbox's entries, the instances'
/// checks); then the writes the operator must not make are refused.
async fn console_work(acl: &Acl, token: &Secret) -> Result<(), String> {
    // What the pages show: a stable version, an outbox entry and a `web`
    // instance whose checks Consul filters without service:read and
    // node:read.
    let admin = Store::new(acl.admin(), PREFIX);
    admin
        .set_stable(
            "web",
            &rollgate::rollout::machine::StableRef {
                template_version: 3,
                image: "ami-0stable".into(),
                version: "1.0.0".into(),
            },
        )
        .await
        .unwrap();
    let notify = NotifyConfig {
        default_receivers: vec!["ops".into()],
        ..NotifyConfig::default()
    };
    Outbox::new(acl.admin(), PREFIX, &notify)
        .enqueue(Event::meta(
            MetaNotice {
                kind: MetaKind::NoLeader,
                status: AlertStatus::Firing,
                since_ms: 1,
                detail: String::new(),
            },
            now_ms(),
        ))
        .await
        .unwrap();
    acl.register_services();

    let mut config = rollgate::config::Config::default();
    config.consul.address = format!("http://{}", acl.consul.http_addr());
    config.services = vec![rollgate::coordinator::config::ServiceConfig {
        name: "web".into(),
        auto_scaling_group: "web".into(),
        launch_template: "web".into(),
        artifact: "acmeinc/web".into(),
        ..Default::default()
    }];
    config.http.listen = "127.0.0.1:0".into();
    let cancel = CancellationToken::new();
    // The replica's own token only serves /metrics; every route below
    // reads with the operator's.
    let console = rollgate::console::start(&config, &acl.admin(), "acl-test", cancel.clone())
        .await
        .unwrap();
    let mut result = console_reads(console.addr, token).await;
    if result.is_ok() {
        result = ended_rollout_timeline(&admin, console.addr, token).await;
    }
    cancel.cancel();
    rollgate::console::stopped(Some(console)).await;
    result?;

    // Reads only: what the coordinator and the watcher write stays theirs.
    let operator = acl.client(token);
    for key in [
        "rollgate/services/web/stable",
        "rollgate/services/web/rollout",
        "rollgate/outbox/forged",
        "rollgate/leader",
    ] {
        let written = operator.kv_put(key, b"{}", &PutOptions::default()).await;
        assert!(
            written.is_err(),
            "the operator policy lets an operator write {key}: {written:?}"
        );
    }
    Ok(())
}

/// Every documented `GET` route of the console that reads with the
/// caller's token (the API under `/v1/`, the timeline chart), with `web`
/// and plan `web-1`.
/// Ends the seeded rollout as the coordinator does (its plan's outcome
/// recorded, the record archived under `rollouts/`), then reads the
/// service's timeline, which now comes from the archive.
async fn ended_rollout_timeline(
    admin: &Store,
    addr: SocketAddr,
    token: &Secret,
) -> Result<(), String> {
    let (rollout, index) = admin
        .rollout("web")
        .await
        .unwrap()
        .expect("the seeded rollout");
    admin
        .set_outcome(&rollout.spec.id, &Outcome::Succeeded { at: now_ms() })
        .await
        .unwrap();
    assert!(admin.archive_rollout(&rollout, index).await.unwrap());
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/services/web/timeline.svg"))
        .header("X-Consul-Token", token.expose())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    if status != 200 {
        return Err(format!(
            "console GET /services/web/timeline.svg (ended rollout): {status} {body}"
        ));
    }
    if !body.contains(&rollout.spec.id) {
        return Err(format!(
            "console GET /services/web/timeline.svg (ended rollout) does not draw {}: {body}",
            rollout.spec.id
        ));
    }
    Ok(())
}

async fn console_reads(addr: SocketAddr, token: &Secret) -> Result<(), String> {
    let http = reqwest::Client::new();
    let routes: Vec<String> = rollgate::console::route_list()
        .into_iter()
        .filter(|(method, path)| {
            *method == reqwest::Method::GET && !["/v1/openapi.yaml", "/metrics"].contains(path)
        })
        .map(|(_, path)| path.replace("{service}", "web").replace("{plan}", "web-1"))
        .collect();
    assert!(routes.len() >= 8, "the console's read routes: {routes:?}");
    for path in routes {
        let r = http
            .get(format!("http://{addr}{path}"))
            .header("X-Consul-Token", token.expose())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let json = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        // An event stream does not end: its status is the answer.
        let body: serde_json::Value = if json {
            tokio::time::timeout(Duration::from_secs(10), r.json())
                .await
                .map_err(|_| format!("GET {path}: no answer within 10s"))?
                .unwrap_or_default()
        } else {
            serde_json::Value::Null
        };
        if status != 200 {
            return Err(format!("console GET {path}: {status} {body}"));
        }
        let services = match path.as_str() {
            "/v1/services" => body["services"].as_array().cloned().unwrap_or_default(),
            "/v1/services/web" => vec![body.clone()],
            _ => Vec::new(),
        };
        for s in services {
            if let Some(refused) = s["stable_refused"].as_str() {
                return Err(format!("console GET {path}: the stable version: {refused}"));
            }
            if s["stable"]["version"] != "1.0.0" {
                return Err(format!("console GET {path}: no stable version in {s}"));
            }
        }
        if path == "/v1/outbox" && body["entries"].as_array().is_none_or(Vec::is_empty) {
            return Err(format!(
                "console GET {path}: the seeded entry is missing: {body}"
            ));
        }
        if path == "/v1/services/web/rollout" {
            let rollout = &body["rollout"];
            if rollout["filtered_by_acls"] != false {
                return Err(format!(
                    "console GET {path}: Consul filtered the health of web \
                     (X-Consul-Results-Filtered-By-ACLs): the token lacks service:read on \
                     \"web\" or node:read on its node: {rollout}"
                ));
            }
        }
    }
    Ok(())
}

async fn cli_role(role: Role) {
    let rules = policy_rules(role);
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(String, Option<Rule>, Vec<Rule>)> =
        vec![("full".into(), None, rules.clone())];
    for (i, removed) in rules.iter().enumerate() {
        let mut less = rules.clone();
        less.remove(i);
        cases.push((format!("without-{i}"), Some(removed.clone()), less));
    }
    for (name, removed, rules) in cases {
        // A fresh world per case: the commands change the plans.
        let acl = Acl::start().await;
        seed(&acl, role == Role::Operator, role == Role::Ci).await;
        let token = acl.token(&format!("{role}-{name}"), &hcl_of(&rules)).await;
        let config = cli_config(dir.path(), &acl, &token, &format!("{role}-{name}"));
        let result = match cli_work(&config, &acl.client(&token), role).await {
            Ok(()) if role == Role::Operator => console_work(&acl, &token).await,
            other => other,
        };
        match (removed, result) {
            (None, r) => {
                r.unwrap_or_else(|e| panic!("the {role} with exactly {}: {e}", role.policy_file()))
            }
            (Some(rule), Ok(())) => panic!(
                "the {role} without `{rule}` of {} did all its work",
                role.policy_file()
            ),
            (Some(rule), Err(e)) => {
                assert!(
                    names_rule(&e, &rule),
                    "the {role} without `{rule}` failed without naming {} on {:?}: {e}",
                    rule.permission(),
                    rule.name
                );
                assert!(
                    !e.contains(token.expose()),
                    "the token is never printed: {e}"
                );
            }
        }
        acl.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_policy_is_enough_and_every_rule_is_needed() {
    cli_role(Role::Operator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_policy_is_enough_and_every_rule_is_needed() {
    cli_role(Role::Ci).await;
}

// ---------------------------------------------------------------------------
// The node agent: the real binary on a Consul client node.

async fn web_app() -> (LoggedChild, SocketAddr) {
    let mut cmd = tokio::process::Command::new(sandbox::testkit::binary("web", "web"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("WEB_VERSION", "1.2.3")
        .stdout(Stdio::piped());
    let mut p = LoggedChild::spawn(cmd).unwrap();
    let stdout = p.child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (p, line.trim_start_matches("listening on ").parse().unwrap())
}

fn agent(
    dir: &Path,
    node: SocketAddr,
    token: &Secret,
    name: &str,
    app: SocketAddr,
    imds: &str,
) -> LoggedChild {
    let token_file = dir.join(format!("{name}.token"));
    token.write_file(&token_file).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[consul]\naddress = \"http://{node}\"\ntoken_file = {:?}\n\n[log]\nlevel = \"info\"\n\n\
             [agent]\nservice_port = {port}\nservice_address = \"127.0.0.1\"\n\
             artifact = \"acmeinc/web\"\nexpected_version = \"1.2.3\"\napp_url = \"http://{app}\"\n\
             check_url = \"http://{app}/health\"\ncheck_interval = \"1s\"\ncheck_timeout = \"500ms\"\n\
             ttl = \"2s\"\ndrain_time = \"0s\"\nimds_endpoint = \"{imds}\"\n",
            token_file.display().to_string(),
            port = app.port(),
        ),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollgate"));
    cmd.args(["--config", path.to_str().unwrap(), "agent"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    LoggedChild::spawn(cmd).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_policy_is_enough_and_every_rule_is_needed() {
    let acl = Acl::start().await;
    let node = acl.consul.nodes()[0].addr;
    let imds = imds::start(
        Identity {
            instance_id: "i-0acl00000000000001".into(),
            ami_id: "ami-0aaaaaaaaaaaaaaa1".into(),
            availability_zone: "eu-west-1b".into(),
            region: "eu-west-1".into(),
            local_ipv4: Ipv4Addr::LOCALHOST,
            instance_type: "t3.micro".into(),
            account_id: "123456789012".into(),
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_app, app) = web_app().await;
    let rules = policy_rules(Role::Agent);
    let full = acl.token("agent-full", &hcl_of(&rules)).await;
    let mut running = agent(dir.path(), node, &full, "agent-full", app, &imds.endpoint());
    let admin = acl.client_at(node, &acl.management);
    until(
        "the agent's instance passes",
        Duration::from_secs(20),
        || async {
            let r = admin
                .health_service("web", true, None, &QueryOptions::default())
                .await
                .ok()?;
            (!r.value.is_empty()).then_some(())
        },
    )
    .await;
    // The /ready answer reads the service's health with the same token.
    let ready = admin
        .agent_services()
        .await
        .unwrap()
        .into_values()
        .find(|s| s.service == "web")
        .expect("registered");
    let own = acl.client_at(node, &full);
    assert!(own.agent_service_health(&ready.id).await.unwrap().is_some());
    running.child.start_kill().unwrap();
    let _ = running.wait(Duration::from_secs(10)).await;
    admin.deregister_service(&ready.id).await.unwrap();

    for (i, removed) in rules.iter().enumerate() {
        let mut less = rules.clone();
        less.remove(i);
        let name = format!("agent-without-{i}");
        let token = acl.token(&name, &hcl_of(&less)).await;
        let mut p = agent(dir.path(), node, &token, &name, app, &imds.endpoint());
        let log = until(
            "the agent names the missing rule",
            Duration::from_secs(20),
            || {
                let log = p.log();
                async move { names_rule(&log, removed).then_some(log) }
            },
        )
        .await;
        assert!(log.contains("403"), "{log}");
        assert!(
            !log.contains(token.expose()),
            "the token is never logged: {log}"
        );
        p.child.start_kill().unwrap();
        let _ = p.wait(Duration::from_secs(10)).await;
    }
    let _ = imds.shutdown().await;
    acl.shutdown().await;
}

// ---------------------------------------------------------------------------
// `rollgate check-config --connect`: the preflight of each role's token.

/// Runs `rollgate check-config --connect [--role ROLE]` with `config`;
/// answers (exit code, stdout and stderr).
async fn preflight(config: &Path, role: Option<&str>) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollgate"));
    cmd.arg("--config")
        .arg(config)
        .args(["check-config", "--connect"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    if let Some(role) = role {
        cmd.args(["--role", role]);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_reports_what_each_roles_token_can_do() {
    let acl = Acl::start().await;
    acl.register_services();
    let dir = tempfile::tempdir().unwrap();
    for role in Role::ALL {
        let rules = policy_rules(role);
        let token = acl
            .token(&format!("{role}-preflight"), &hcl_of(&rules))
            .await;
        let config = cli_config(dir.path(), &acl, &token, &format!("{role}-preflight"));
        let (code, out) = preflight(&config, Some(role.as_str())).await;
        assert_eq!(
            code, 0,
            "the {role}'s own policy passes its preflight: {out}"
        );
        assert!(
            out.contains(&format!("{role}-preflight")),
            "names the token's description and policy: {out}"
        );
        assert!(out.contains("AccessorID"), "{out}");
        assert!(!out.contains(token.expose()), "never the SecretID: {out}");
        assert!(!out.contains("MISSING"), "{out}");
        for rule in &rules {
            assert!(out.contains(&rule.to_string()), "reports `{rule}`: {out}");
        }
        // Key rules are proven, not assumed.
        for rule in rules.iter().filter(|r| r.resource == Resource::Key) {
            let line = out.lines().find(|l| l.contains(&rule.to_string())).unwrap();
            assert!(line.contains(" ok "), "`{rule}` is probed: {line}");
        }
    }
    // Inferred from [[services]]: the coordinator.
    let full = acl
        .token(
            "coordinator-inferred",
            &hcl_of(&policy_rules(Role::Coordinator)),
        )
        .await;
    let config = cli_config(dir.path(), &acl, &full, "coordinator-inferred");
    let (code, out) = preflight(&config, None).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("config/acl/coordinator.hcl"), "{out}");
    acl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_names_a_missing_rule_and_its_policy_file() {
    let acl = Acl::start().await;
    acl.register_services();
    let dir = tempfile::tempdir().unwrap();
    let rules = policy_rules(Role::Coordinator);
    // One refused (403) and one filtered case.
    for missing in [
        Rule {
            resource: Resource::Key,
            prefix: true,
            name: "rollgate/services/".into(),
            access: Access::Write,
        },
        Rule {
            resource: Resource::Service,
            prefix: true,
            name: String::new(),
            access: Access::Read,
        },
    ] {
        assert!(
            rules.contains(&missing),
            "{missing} is in the coordinator's policy"
        );
        let less: Vec<Rule> = rules.iter().filter(|r| **r != missing).cloned().collect();
        let name = format!(
            "coordinator-without-{}",
            missing.resource.block(missing.prefix)
        );
        let token = acl.token(&name, &hcl_of(&less)).await;
        let config = cli_config(dir.path(), &acl, &token, &name);
        let (code, out) = preflight(&config, Some("coordinator")).await;
        assert_eq!(code, 3, "{out}");
        assert!(out.contains("MISSING"), "{out}");
        let verdict = out.lines().find(|l| l.contains("MISSING")).unwrap();
        assert!(verdict.contains(&missing.to_string()), "{verdict}");
        assert!(
            out.contains(&format!("lacks `{missing}` ({})", missing.permission()))
                && out.contains("config/acl/coordinator.hcl grants it"),
            "the failure names the rule, the permission and the file: {out}"
        );
        assert!(!out.contains(token.expose()), "{out}");
    }
    acl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_explains_an_unknown_or_expired_token() {
    let acl = Acl::start().await;
    let dir = tempfile::tempdir().unwrap();
    let unknown = Secret::random();
    let config = cli_config(dir.path(), &acl, &unknown, "unknown");
    let (code, out) = preflight(&config, Some("ci")).await;
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("ACL not found") && out.contains("expired"),
        "{out}"
    );
    assert!(out.contains("config/acl/ci.hcl"), "{out}");
    assert!(!out.contains(unknown.expose()), "{out}");

    // A token that expires: shown with its expiry, then refused as Consul
    // refuses it (ACL not found) once expired. Consul's shortest
    // expiration is a minute.
    let policy = hcl_of(&policy_rules(Role::Ci));
    let resp = acl
        .http
        .put(acl.url("/v1/acl/policy"))
        .json(&json!({ "Name": "ci-expiring", "Rules": policy }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let resp = acl
        .http
        .put(acl.url("/v1/acl/token"))
        .json(&json!({ "Description": "ci-expiring", "Policies": [{ "Name": "ci-expiring" }], "ExpirationTTL": "1m" }))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    let expiring = Secret::new(body["SecretID"].as_str().unwrap());
    let config = cli_config(dir.path(), &acl, &expiring, "expiring");
    let (code, out) = preflight(&config, Some("ci")).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("expires 20"), "shows when it expires: {out}");
    tokio::time::sleep(Duration::from_secs(61)).await;
    let (code, out) = preflight(&config, Some("ci")).await;
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("ACL not found") && out.contains("expired"),
        "{out}"
    );
    assert!(!out.contains(expiring.expose()), "{out}");
    acl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_says_when_acls_are_off() {
    let consul = Server::start(ServerConfig {
        nodes: 1,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("off.toml");
    std::fs::write(
        &path,
        format!(
            "[consul]\naddress = \"http://{}\"\n\n[[services]]\nname = \"web\"\n\
             auto_scaling_group = \"web\"\nlaunch_template = \"web\"\nartifact = \"acmeinc/web\"\n",
            consul.http_addr()
        ),
    )
    .unwrap();
    let (code, out) = preflight(&path, Some("operator")).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ACLs are off"), "{out}");
    assert!(
        out.contains("ACL support disabled"),
        "Consul's own answer: {out}"
    );
    assert!(out.contains("config/acl/operator.hcl"), "{out}");
    consul.shutdown().await;
}

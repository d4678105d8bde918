//! One simulated EC2 instance: its own IMDSv2 endpoint, the real `web` app
//! and the real `rollgate agent`, as processes, pointed at a Consul agent.
//!
//! The fleet simulator starts one per instance of the emulated Auto Scaling
//! group; the benchmarks start them directly. Stopping a node sends SIGTERM to
//! the agent first (so it drains, as systemd would on shutdown), then to the
//! app. Every process is killed on drop, so nothing outlives its owner.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::imds::{self, Identity, ImdsHandle};

/// Where the `web` and `rollgate` binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The `web` app.
    pub web: PathBuf,
    /// The `rollgate` binary.
    pub rollgate: PathBuf,
}

impl Binaries {
    /// The binaries next to the running executable (the same cargo profile
    /// directory), as `cargo build -p rollgate -p web` leaves them.
    pub fn beside_current_exe() -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        Self::in_dir(&dir)
    }

    /// The `web` and `rollgate` binaries in `dir` (such as `target/dist`),
    /// or an error naming the one missing and how to build it.
    pub fn in_dir(dir: &Path) -> std::io::Result<Self> {
        let found = Self {
            web: dir.join("web"),
            rollgate: dir.join("rollgate"),
        };
        for bin in [&found.web, &found.rollgate] {
            if !bin.exists() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "{} is missing; build it first with `cargo build --release -p rollgate -p web` \
                         (or without --release for a debug sandbox)",
                        bin.display()
                    ),
                ));
            }
        }
        Ok(found)
    }
}

/// How to run one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The instance identity served on its IMDS endpoint.
    pub identity: Identity,
    /// Its Consul agent (a sandbox Consul node listener).
    pub consul: SocketAddr,
    /// Environment of the app (`WEB_VERSION`, `WEB_BOOT_DELAY`, ...).
    pub web_env: Vec<(String, String)>,
    /// Version baked into the "image", expected by the agent.
    pub expected_version: String,
    /// Artifact name, put in the service Meta.
    pub artifact: String,
    /// Consul HTTP check interval (also the agent's probe interval).
    pub check_interval: Duration,
    /// The agent's TTL.
    pub ttl: Duration,
    /// The agent's drain time.
    pub drain_time: Duration,
    /// Directory for the node's configuration file and logs.
    pub dir: PathBuf,
    /// File holding the agent's Consul ACL token (its `consul.token_file`),
    /// as Puppet writes `/etc/rollgate/consul-token`; `None` sends none
    /// (a Consul with ACLs off).
    pub token_file: Option<PathBuf>,
    /// The agent's readiness endpoint (`agent.ready_listen`), as the image
    /// turns it on for the load balancer; `None` leaves it off.
    pub ready_listen: Option<SocketAddr>,
}

/// A running node.
#[derive(Debug)]
pub struct SimNode {
    /// The identity it serves.
    pub identity: Identity,
    /// Where the app listens.
    pub web_addr: SocketAddr,
    imds: Option<ImdsHandle>,
    web: Child,
    agent: Child,
    agent_log: Arc<Mutex<String>>,
}

/// Formats a duration for the agent's TOML (milliseconds are always valid).
fn toml_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Collects a child's stderr lines into a shared string.
fn collect(child: &mut Child) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let l = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut log) = l.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
    }
    log
}

impl SimNode {
    /// Starts IMDS, the app (waiting until it listens) and the agent.
    pub async fn start(bins: &Binaries, spec: &NodeSpec) -> std::io::Result<Self> {
        std::fs::create_dir_all(&spec.dir)?;
        let imds =
            imds::start(spec.identity.clone(), SocketAddr::from(([127, 0, 0, 1], 0))).await?;

        let mut web = Command::new(&bins.web);
        web.args(["--listen", "127.0.0.1:0"])
            .envs(spec.web_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut web = web.spawn()?;
        let stdout = web
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("web has no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| std::io::Error::other("web did not report its address within 20s"))??
            .ok_or_else(|| std::io::Error::other("web exited before listening"))?;
        let web_addr: SocketAddr = line
            .trim()
            .trim_start_matches("listening on ")
            .parse()
            .map_err(|e| std::io::Error::other(format!("web printed {line:?}: {e}")))?;

        let token_file = spec
            .token_file
            .as_ref()
            .map(|f| format!("token_file = {:?}\n", f.display().to_string()))
            .unwrap_or_default();
        let config = format!(
            "[consul]\naddress = \"http://{consul}\"\n{token_file}\n[log]\nformat = \"json\"\n\n[agent]\n\
             service_port = {port}\nservice_address = \"127.0.0.1\"\nartifact = \"{artifact}\"\n\
             expected_version = \"{version}\"\napp_url = \"http://{web_addr}\"\n\
             check_url = \"http://{web_addr}/health\"\ncheck_interval = \"{interval}\"\n\
             check_timeout = \"{timeout}\"\nttl = \"{ttl}\"\ndrain_time = \"{drain}\"\n\
             imds_endpoint = \"{imds}\"\n{ready}",
            consul = spec.consul,
            port = web_addr.port(),
            artifact = spec.artifact,
            version = spec.expected_version,
            interval = toml_duration(spec.check_interval),
            timeout = toml_duration((spec.check_interval / 2).min(Duration::from_secs(2))),
            ttl = toml_duration(spec.ttl),
            drain = toml_duration(spec.drain_time),
            imds = imds.endpoint(),
            ready = spec
                .ready_listen
                .map(|a| format!("ready_listen = \"{a}\"\n"))
                .unwrap_or_default(),
        );
        let path = spec.dir.join("rollgate.toml");
        std::fs::write(&path, config)?;
        let mut agent = Command::new(&bins.rollgate);
        agent
            .arg("--config")
            .arg(&path)
            .arg("agent")
            .env_remove("CONSUL_HTTP_ADDR")
            .env_remove("CONSUL_HTTP_TOKEN")
            .env_remove("CONSUL_HTTP_TOKEN_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // A node's agent reads its node's file and nothing of the shell
        // that started the test: a `ROLLGATE_*` variable there would be
        // read as configuration (and an unknown key refused).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ROLLGATE_") {
                agent.env_remove(key);
            }
        }
        let mut agent = agent.spawn()?;
        let agent_log = collect(&mut agent);
        Ok(Self {
            identity: spec.identity.clone(),
            web_addr,
            imds: Some(imds),
            web,
            agent,
            agent_log,
        })
    }

    /// The agent's process ID (for footprint measurements).
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.id()
    }

    /// The app's process ID (to check it is gone after a stop, or to kill it
    /// without a drain in a test).
    pub fn web_pid(&self) -> Option<u32> {
        self.web.id()
    }

    /// The agent's exit status once it has exited on its own (say, on an
    /// invalid configuration); `None` while it runs.
    pub fn agent_exited(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.agent.try_wait()
    }

    /// What the agent logged so far.
    pub fn agent_log(&self) -> String {
        self.agent_log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Stops the node as an instance shutdown does: SIGTERM to the agent
    /// (it drains), wait up to `grace`, then stop the app and IMDS.
    pub async fn stop(mut self, grace: Duration) {
        terminate(&mut self.agent, grace).await;
        terminate(&mut self.web, Duration::from_secs(5)).await;
        if let Some(imds) = self.imds.take() {
            let _ = imds.shutdown().await;
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`.
async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

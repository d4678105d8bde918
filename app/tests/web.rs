//! Runs the real `web` binary on a free loopback port and checks what it
//! answers, how the `WEB_*` variables change that, and how it stops.
//!
//! Every child is spawned with `kill_on_drop`, so a failing assertion never
//! leaves a server behind.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};
use web::VersionInfo;

/// Generous bound for anything that should take milliseconds.
const PATIENCE: Duration = Duration::from_secs(15);

/// A running `web` child and the address it announced.
struct Web {
    /// The process; killed when this is dropped.
    child: Child,
    /// `http://127.0.0.1:PORT`, read from the child's stdout.
    base: String,
    /// Client without proxies: loopback must never go through one.
    http: reqwest::Client,
}

impl Web {
    /// Starts `web --listen 127.0.0.1:0` with `env` and waits for its address.
    async fn start(env: &[(&str, &str)]) -> Self {
        let mut cmd = base_command(env);
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn the web binary");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        timeout(PATIENCE, BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("web announces its address in time")
            .expect("read web's stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(PATIENCE)
            .build()
            .expect("build an HTTP client");
        Self {
            child,
            base: format!("http://{addr}"),
            http,
        }
    }

    /// `GET path`, returning status and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let body = response.text().await.expect("read the body");
        (status, body)
    }

    /// Polls `path` until it answers `want`, returning when it did.
    async fn wait_for(&self, path: &str, want: u16) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, _) = self.get(path).await;
            if status == want {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "{path} still answers {status}, not {want}"
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (e.g. `TERM`) with the `kill` command.
    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the child is still running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits for the child to exit.
    async fn exit_status(&mut self) -> ExitStatus {
        timeout(PATIENCE, self.child.wait())
            .await
            .expect("web exits in time")
            .expect("wait for web")
    }
}

fn base_command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_web"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env_remove("WEB_VERSION")
        .env_remove("WEB_BOOT_DELAY")
        .env_remove("WEB_FAIL_HEALTH")
        .env_remove("WEB_FAIL_AFTER")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn version_and_index_name_the_version() {
    let web = Web::start(&[("WEB_VERSION", "1.2.3-test")]).await;

    let (status, body) = web.get("/version").await;
    assert_eq!(status, 200);
    let info: VersionInfo = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(
        info,
        VersionInfo {
            version: "1.2.3-test".into(),
            name: "web".into()
        }
    );

    let (status, body) = web.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");
    assert!(body.contains("1.2.3-test"), "{body}");

    let (status, _) = web.get("/health").await;
    assert_eq!(status, 200);
    let (status, _) = web.get("/no-such-page").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn default_version_is_the_crate_version() {
    let web = Web::start(&[]).await;
    let (status, body) = web.get("/version").await;
    assert_eq!(status, 200);
    let info: VersionInfo = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn booting_app_serves_nothing_until_the_delay_has_passed() {
    let spawned = Instant::now();
    let web = Web::start(&[("WEB_BOOT_DELAY", "1s")]).await;
    for path in ["/health", "/version", "/"] {
        let (status, _) = web.get(path).await;
        assert_eq!(status, 503, "{path} while booting");
    }
    let ready = web.wait_for("/health", 200).await;
    assert!(
        ready.duration_since(spawned) >= Duration::from_millis(900),
        "ready after {:?}",
        ready.duration_since(spawned)
    );
    let (status, _) = web.get("/version").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn fail_health_answers_500_but_still_serves_pages() {
    let web = Web::start(&[("WEB_FAIL_HEALTH", "1")]).await;
    let (status, _) = web.get("/health").await;
    assert_eq!(status, 500);
    let (status, _) = web.get("/version").await;
    assert_eq!(status, 200);
    sleep(Duration::from_millis(300)).await;
    let (status, _) = web.get("/health").await;
    assert_eq!(status, 500, "still failing later");
}

#[tokio::test]
async fn fail_after_turns_unhealthy_once_the_time_is_up() {
    let web = Web::start(&[("WEB_FAIL_AFTER", "1s")]).await;
    let (status, _) = web.get("/health").await;
    assert_eq!(status, 200, "healthy at first");
    web.wait_for("/health", 500).await;
    let (status, _) = web.get("/health").await;
    assert_eq!(status, 500, "stays unhealthy");
}

#[tokio::test]
async fn sigterm_exits_zero() {
    let mut web = Web::start(&[]).await;
    let (status, _) = web.get("/health").await;
    assert_eq!(status, 200);
    web.signal("TERM");
    let status = web.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn sigint_exits_zero() {
    let mut web = Web::start(&[]).await;
    web.signal("INT");
    let status = web.exit_status().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn invalid_boot_delay_exits_2_naming_the_variable() {
    let mut cmd = base_command(&[("WEB_BOOT_DELAY", "soon")]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the web binary");
    let status = timeout(PATIENCE, child.wait())
        .await
        .expect("web exits in time")
        .expect("wait for web");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut stderr)
        .await
        .expect("read stderr");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut stdout)
        .await
        .expect("read stdout");

    assert_eq!(status.code(), Some(2), "{status}: {stderr}");
    assert!(stderr.contains("WEB_BOOT_DELAY"), "{stderr}");
    assert!(stderr.contains("soon"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stdout.is_empty(), "nothing announced: {stdout}");
}

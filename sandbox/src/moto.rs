//! The AWS stand-in: a moto server (PyPI `moto[server]`) in a child process,
//! and helpers to seed it with an AMI, a launch template and an Auto Scaling
//! group ([`seed`]).
//!
//! [`Moto::start`] runs moto through a small Python launcher that binds port 0
//! (no race for a free port), prints the port, and exits as soon as its stdin
//! closes. The stdin pipe is the lifeline: it closes when [`Moto`] is dropped
//! or shut down (which also kill and reap the child), when a test panics, and
//! when the test process dies without unwinding, so no moto process outlives
//! its owner.
//!
//! moto is an emulator with known gaps and quirks (unimplemented instance
//! refresh and lifecycle calls, tags ignored on RegisterImage, template
//! versions reported per instance that are the default's); this module
//! papers over none of them: rollgate's code must handle them as it would
//! handle AWS.

pub mod seed;

use std::io::{self, BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};

/// The region the sandbox uses.
pub const REGION: &str = "us-east-1";

/// How long moto may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What to tell a user whose machine lacks Python or moto.
const HOW_TO_INSTALL: &str =
    "run `bash sandbox/scripts/prerequisites` (it installs moto[server] with pip)";

/// Marker the launcher prints when moto cannot be imported.
const MISSING_MARKER: &str = "ROLLGATE-MOTO-MISSING";

/// The launcher: serve moto's WSGI app on an ephemeral port, as `moto_server`
/// does, report the port, live until stdin closes.
const LAUNCHER: &str = r#"
import logging, os, sys, threading
try:
    from werkzeug.serving import make_server
    from moto.server import DomainDispatcherApplication, create_backend_app
except ImportError as e:
    print("ROLLGATE-MOTO-MISSING " + str(e), flush=True)
    sys.exit(3)
logging.getLogger("werkzeug").setLevel(logging.WARNING)
server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=True)
print(server.socket.getsockname()[1], flush=True)
sys.stdout = sys.stderr
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
os._exit(0)
"#;

/// A running moto server, killed when dropped.
#[derive(Debug)]
pub struct Moto {
    /// The Python process; `None` once shut down.
    child: Option<Child>,
    /// Kept open so the launcher never writes into a closed pipe.
    _stdout: Option<BufReader<ChildStdout>>,
    /// Its loopback port.
    port: u16,
    /// `http://127.0.0.1:PORT`.
    endpoint: String,
    /// For the `/moto-api/` control calls.
    http: reqwest::Client,
}

impl Moto {
    /// Starts moto with no default AMIs (`MOTO_EC2_LOAD_DEFAULT_AMIS=false`)
    /// and waits until it answers. The interpreter is `python3`, or
    /// `$SANDBOX_PYTHON` when set.
    pub async fn start() -> io::Result<Moto> {
        let python = std::env::var("SANDBOX_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        Self::start_with_python(&python).await
    }

    /// [`Moto::start`] with an explicit Python interpreter.
    pub async fn start_with_python(python: &str) -> io::Result<Moto> {
        let mut child = Command::new(python)
            .args(["-c", LAUNCHER])
            .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {python} to start moto ({e}): {HOW_TO_INSTALL}"),
                )
            })?;
        let stdout = child.stdout.take();
        let mut moto = Moto {
            child: Some(child),
            _stdout: None,
            port: 0,
            endpoint: String::new(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(io::Error::other)?,
        };
        // From here on, an early return drops `moto`, which kills the child.
        let stdout =
            stdout.ok_or_else(|| io::Error::other("the moto launcher has no stdout pipe"))?;
        let read = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            reader.read_line(&mut line).map(|_| (reader, line))
        });
        let (reader, line) = tokio::time::timeout(START_TIMEOUT, read)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "moto did not report its port within 30 s",
                )
            })?
            .map_err(io::Error::other)??;
        moto._stdout = Some(reader);
        let line = line.trim();
        if let Some(detail) = line.strip_prefix(MISSING_MARKER) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "moto is not installed for {python} ({}): {HOW_TO_INSTALL}",
                    detail.trim()
                ),
            ));
        }
        moto.port = line.parse().map_err(|_| {
            io::Error::other(format!(
                "the moto launcher did not report a port (it said {line:?}; see its error output above): {HOW_TO_INSTALL}"
            ))
        })?;
        moto.endpoint = format!("http://127.0.0.1:{}", moto.port);
        moto.wait_until_ready().await?;
        tracing::debug!(endpoint = %moto.endpoint, "moto is ready.");
        Ok(moto)
    }

    async fn wait_until_ready(&mut self) -> io::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let url = format!("{}/moto-api/", self.endpoint);
        loop {
            match self.http.get(&url).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                result => {
                    let exited = match self.child.as_mut() {
                        Some(child) => child.try_wait()?,
                        None => None,
                    };
                    if let Some(status) = exited {
                        return Err(io::Error::other(format!(
                            "moto exited during start-up ({status})"
                        )));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "moto at {} does not answer within 30 s (last: {result:?})",
                                self.endpoint
                            ),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// `http://127.0.0.1:PORT`: the endpoint URL for the AWS SDK.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, `None` once shut down.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An SDK configuration for this server: region [`REGION`], static dummy
    /// credentials, SDK retries off, short time-outs.
    pub fn sdk_config(&self) -> SdkConfig {
        let credentials = Credentials::new("testing", "testing", None, None, "sandbox-moto");
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_timeout(Duration::from_secs(20))
                    .build(),
            )
            .build()
    }

    /// Clears every resource in every region (`POST /moto-api/reset`).
    pub async fn reset(&self) -> io::Result<()> {
        let response = self
            .http
            .post(format!("{}/moto-api/reset", self.endpoint))
            .send()
            .await
            .map_err(io::Error::other)?;
        if !response.status().is_success() {
            return Err(io::Error::other(format!(
                "moto reset answered {}",
                response.status()
            )));
        }
        Ok(())
    }

    /// Stops the server and waits for the process to exit.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        drop(child.stdin.take());
        // Closing stdin alone would do; kill so that shutdown is immediate.
        match child.kill() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {} // already exited
            Err(e) => return Err(e),
        }
        child.wait().map(|_| ())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "Could not stop moto.");
        }
    }
}

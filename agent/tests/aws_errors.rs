//! AWS failures in plain words, through the real binary: an endpoint that
//! refuses connections and one that accepts them and never answers. The
//! message names the service, the endpoint, the call and what to check, and
//! the command ends by itself (every AWS call has a time limit) instead of
//! staying silent.
//!
//! Both use `rollgate publish`, whose first AWS call is
//! `ec2:DescribeImages` on the image it is asked to tag. Nothing here
//! measures time: "ends by itself" is checked by waiting for the exit with a
//! bound far above the calls' own limits, and failing if it is reached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollgate::cli::Exit;

/// A loopback listener that accepts every connection and never answers,
/// holding the connections open until it is dropped.
struct Silent {
    addr: SocketAddr,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                keep.lock().unwrap().push(stream);
            }
        });
        Silent { addr, held }
    }

    fn accepted(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

/// Runs `rollgate publish` against the AWS endpoint `endpoint` and answers
/// the exit code and all output; fails the test if the command has not ended
/// after `bound` (far above the AWS calls' own time limits).
fn publish(endpoint: &str, bound: Duration) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rollgate.toml");
    std::fs::write(
        &config,
        format!("[coordinator]\naws_region = \"us-east-1\"\naws_endpoint = \"{endpoint}\"\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(["--config", config.to_str().unwrap()])
        .args(["publish", "--ami", "ami-0123456789abcdef0"])
        .args(["--artifact", "acmeinc/web", "--version", "1.2.3"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Static credentials and no profile: nothing but the endpoint is
        // wrong, and nothing reaches beyond loopback.
        .env("HOME", dir.path())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env(
            "CONSUL_HTTP_ADDR",
            sandbox::testkit::free_addr().to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`rollgate publish` against {endpoint} had not ended after {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.code().unwrap_or(-1), out)
}

fn assert_plain(out: &str) {
    for debug in [
        "DispatchFailure",
        "ConnectorError",
        "hyper",
        "Os {",
        "TimeoutError",
    ] {
        assert!(!out.contains(debug), "no debug dump ({debug}): {out}");
    }
}

#[test]
fn a_refused_endpoint_names_the_service_endpoint_and_call() {
    let endpoint = format!("http://{}", sandbox::testkit::free_addr());
    let (status, out) = publish(&endpoint, Duration::from_secs(120));
    assert_eq!(status, i32::from(Exit::Unavailable.code()), "{out}");
    assert!(
        out.contains(&format!("cannot reach EC2 at {endpoint}")),
        "names the service and the endpoint: {out}"
    );
    assert!(out.contains("ec2:DescribeImages"), "names the call: {out}");
    assert!(
        out.contains("connection refused"),
        "says what happened: {out}"
    );
    assert!(
        out.contains("coordinator.aws_endpoint"),
        "says what to check: {out}"
    );
    assert_plain(&out);
}

#[test]
fn a_hanging_endpoint_ends_with_a_message_instead_of_silence() {
    let silent = Silent::start();
    let endpoint = format!("http://{}", silent.addr);
    let (status, out) = publish(&endpoint, Duration::from_secs(120));
    assert!(silent.accepted() > 0, "the request reached the listener");
    assert_eq!(status, i32::from(Exit::Unavailable.code()), "{out}");
    assert!(
        out.contains(&format!("EC2 at {endpoint} did not answer")),
        "names the service and the endpoint: {out}"
    );
    assert!(out.contains("ec2:DescribeImages"), "names the call: {out}");
    assert!(
        out.contains("coordinator.aws_endpoint"),
        "says what to check: {out}"
    );
    assert_plain(&out);
}

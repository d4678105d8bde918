//! A fault-injecting TCP proxy on loopback, for outages a test needs between
//! one client and one server without touching the others: Consul
//! unreachable for the coordinator only, AWS throttling or failing every
//! call for a while.
//!
//! The proxy forwards bytes both ways until its mode changes; a change
//! closes every open connection, so pooled keep-alive connections meet the
//! new mode at once. In [`Mode::Refuse`] each new connection is closed
//! before a byte is read (the client sees its request fail); in
//! [`Mode::Respond`] and [`Mode::AwsThrottle`] it reads one HTTP request and
//! answers it, `Connection: close`.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the proxy does with connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the upstream.
    Forward,
    /// Close every connection at once: the server looks unreachable.
    Refuse,
    /// Answer every request with this status and body.
    Respond {
        /// HTTP status.
        status: u16,
        /// Body, sent as `text/plain` unless it starts with `<`.
        body: String,
    },
    /// Answer every request as AWS answers a caller over its rate: EC2's
    /// `RequestLimitExceeded` (503) or Auto Scaling's `Throttling` (400),
    /// told apart by the API version in the request.
    AwsThrottle,
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<Mode>,
    /// Bumped on every mode change; connections end when it moves.
    epoch: watch::Sender<u64>,
    faulted: AtomicU64,
}

/// A running proxy; stopped on [`FaultProxy::shutdown`] or drop.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Forward),
            epoch: watch::channel(0).0,
            faulted: AtomicU64::new(0),
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            Arc::clone(&shared),
            cancel.clone(),
        ));
        Ok(Self {
            addr,
            shared,
            cancel,
            task: Some(task),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the mode, closing every open connection.
    pub fn set(&self, mode: Mode) {
        if let Ok(mut m) = self.shared.mode.lock() {
            *m = mode;
        }
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// Connections refused and requests answered with a fault so far.
    pub fn faulted(&self) -> u64 {
        self.shared.faulted.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => return,
            c = listener.accept() => c,
        };
        let Ok((client, _)) = conn else { continue };
        let mode = shared
            .mode
            .lock()
            .map(|m| m.clone())
            .unwrap_or(Mode::Refuse);
        let shared = Arc::clone(&shared);
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut epoch = shared.epoch.subscribe();
            epoch.mark_unchanged();
            let work = serve(client, upstream, &mode, &shared);
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = epoch.changed() => {}
                _ = work => {}
            }
        });
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, mode: &Mode, shared: &Shared) {
    match mode {
        Mode::Forward => {
            if let Ok(mut server) = TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        }
        Mode::Refuse => {
            shared.faulted.fetch_add(1, Ordering::Relaxed);
            drop(client);
        }
        Mode::Respond { status, body } => {
            if read_request(&mut client).await.is_some() {
                shared.faulted.fetch_add(1, Ordering::Relaxed);
                let _ = respond(&mut client, *status, body).await;
            }
        }
        Mode::AwsThrottle => {
            if let Some(request) = read_request(&mut client).await {
                shared.faulted.fetch_add(1, Ordering::Relaxed);
                let (status, body) = aws_throttle(&request);
                let _ = respond(&mut client, status, &body).await;
            }
        }
    }
}

/// Reads one request (head and `Content-Length` body); `None` when the
/// client went away or sent more than 1 MiB.
async fn read_request(client: &mut TcpStream) -> Option<String> {
    const LIMIT: usize = 1 << 20;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > LIMIT {
            return None;
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + length {
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
    }
}

async fn respond(client: &mut TcpStream, status: u16, body: &str) -> io::Result<()> {
    let content_type = if body.starts_with('<') {
        "text/xml"
    } else {
        "text/plain"
    };
    let head = format!(
        "HTTP/1.1 {status} Fault\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await?;
    client.write_all(body.as_bytes()).await?;
    client.shutdown().await
}

/// AWS's answer to a throttled request: Auto Scaling (API version
/// 2011-01-01) says `Throttling` with 400, EC2 `RequestLimitExceeded` with
/// 503.
fn aws_throttle(request: &str) -> (u16, String) {
    if request.contains("Version=2011-01-01") {
        (
            400,
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>\
             <Message>Rate exceeded</Message></Error><RequestId>sandbox-fault</RequestId></ErrorResponse>"
                .into(),
        )
    } else {
        (
            503,
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code>\
             <Message>Request limit exceeded.</Message></Error></Errors>\
             <RequestID>sandbox-fault</RequestID></Response>"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers every request with `up`.
    async fn upstream() -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.expect("binds");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    while read_request(&mut s).await.is_some() {
                        let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nup";
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn forwards_refuses_and_answers_by_mode() {
        let (up, task) = upstream().await;
        let proxy = FaultProxy::start(up).await.expect("starts");
        // No pooling: every request is a new connection, so each is counted.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let get = |body: &'static str| http.post(format!("{}/", proxy.url())).body(body).send();
        let r = get("x").await.expect("forwarded");
        assert_eq!(r.text().await.expect("body"), "up");

        proxy.set(Mode::Refuse);
        assert!(get("x").await.is_err(), "refused while cut");

        proxy.set(Mode::AwsThrottle);
        let r = get("Action=DescribeAutoScalingGroups&Version=2011-01-01")
            .await
            .expect("answered");
        assert_eq!(r.status().as_u16(), 400);
        assert!(
            r.text()
                .await
                .expect("body")
                .contains("<Code>Throttling</Code>")
        );
        let r = get("Action=DescribeInstances&Version=2016-11-15")
            .await
            .expect("answered");
        assert_eq!(r.status().as_u16(), 503);

        proxy.set(Mode::Respond {
            status: 500,
            body: "boom".into(),
        });
        let r = get("x").await.expect("answered");
        assert_eq!(r.status().as_u16(), 500);
        assert_eq!(proxy.faulted(), 4);

        proxy.set(Mode::Forward);
        let r = get("x").await.expect("forwarded again");
        assert_eq!(r.text().await.expect("body"), "up");
        proxy.shutdown().await;
        task.abort();
    }
}

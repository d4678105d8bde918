//! A real browser for the console's tests: Debian's headless Chromium
//! driven through `chromedriver` (both installed by
//! `sandbox/scripts/prerequisites --tests`) with the W3C WebDriver
//! protocol: JSON over HTTP on loopback, spoken here
//! with the workspace's own `reqwest` (a WebDriver client crate would bring
//! a second ICU stack and a second `thiserror`/`cookie` for the dozen calls
//! these tests make).
//!
//! Each [`Browser`] runs its own `chromedriver --port=FREE` (a child in its
//! own process group, ended with its browser on drop) and one headless
//! session with a fresh profile. Every step's screenshot is written under
//! the target directory: `target/tmp/console-screenshots/<test>/<NN>-<step>.png`.
//! Waits poll the page and, when they give up, say what they waited for
//! with the page's URL and text, and leave a screenshot of it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sandbox::testkit::{LoggedChild, free_addr};
use serde_json::{Value, json};

/// The W3C name of an element reference in WebDriver's answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium's flags: headless, no sandbox (root in containers), and none
/// of its background traffic (a closed network refuses it, slowly).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
];

/// Where the screenshots go.
pub fn screenshot_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

/// `name` found on `PATH`, else in `/usr/bin`; a clear message when absent.
fn program(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is not installed: run `bash sandbox/scripts/prerequisites --tests` (Debian's chromium and chromium-driver)")
    })
}

/// A WebDriver error: the command, and what the driver answered.
#[derive(Debug)]
pub struct DriverError {
    pub command: String,
    /// WebDriver's error code (`no such element`, ...), or the transport's.
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.command, self.error, self.message)
    }
}

/// One headless Chromium session and the chromedriver that runs it; a
/// test's screenshots from an earlier run are removed when it starts.
#[derive(Debug)]
pub struct Browser {
    test: String,
    driver: LoggedChild,
    driver_addr: std::net::SocketAddr,
    session: String,
    http: reqwest::Client,
    step: AtomicU32,
    closed: bool,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless session; `test` names the
    /// screenshots' folder.
    pub async fn start(test: &str) -> Self {
        // This run's screenshots only.
        let _ = std::fs::remove_dir_all(screenshot_root().join(test));
        let driver_addr = free_addr();
        let mut cmd = tokio::process::Command::new(program("chromedriver"));
        cmd.arg(format!("--port={}", driver_addr.port()))
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .process_group(0);
        let driver = LoggedChild::spawn(cmd).expect("chromedriver starts");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://{driver_addr}");
        let start = Instant::now();
        loop {
            let ready = async {
                let v: Value = http
                    .get(format!("{base}/status"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                v["value"]["ready"].as_bool()
            }
            .await;
            if ready == Some(true) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver on {driver_addr} not ready within 30s:\n{}",
                driver.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:chromeOptions": {
                        "binary": program("chromium"),
                        "args": args,
                    }
                }
            }
        });
        let r = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap_or_else(|e| panic!("new session: {e}\n{}", driver.log()));
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "new session: {status} {}\n{}",
                    v["value"]["message"],
                    driver.log()
                )
            })
            .to_owned();
        let b = Self {
            test: test.to_owned(),
            driver,
            driver_addr,
            session,
            http,
            step: AtomicU32::new(0),
            closed: false,
            _profile: profile,
        };
        b.cmd(
            reqwest::Method::POST,
            "timeouts",
            json!({ "pageLoad": 60_000, "script": 30_000, "implicit": 0 }),
        )
        .await
        .unwrap();
        b
    }

    /// One WebDriver command of this session: its `value`, or the error.
    pub async fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, DriverError> {
        let url = format!(
            "http://{}/session/{}/{path}",
            self.driver_addr, self.session
        );
        let command = format!("{method} {path}");
        let mut r = self.http.request(method.clone(), url);
        if method != reqwest::Method::GET {
            r = r.json(&body);
        }
        let fail = |error: String, message: String| DriverError {
            command: command.clone(),
            error,
            message,
        };
        let resp = r
            .send()
            .await
            .map_err(|e| fail("transport".into(), e.to_string()))?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|e| fail("answer".into(), e.to_string()))?;
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(fail(
                v["value"]["error"].as_str().unwrap_or("?").to_owned(),
                v["value"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ))
        }
    }

    /// Opens `url` (a navigation: the page loads anew).
    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "url", json!({ "url": url }))
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The page's URL.
    pub async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "url", Value::Null)
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body: `return ...`) in the page.
    pub async fn exec(&self, script: &str, args: Vec<Value>) -> Result<Value, DriverError> {
        self.cmd(
            reqwest::Method::POST,
            "execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// The text of the first element matching `css`, trimmed; `None` when
    /// there is none.
    pub async fn text(&self, css: &str) -> Option<String> {
        self.exec(
            "const e = document.querySelector(arguments[0]); \
             return e ? (e.innerText || e.textContent || '').trim() : null;",
            vec![json!(css)],
        )
        .await
        .ok()?
        .as_str()
        .map(str::to_owned)
    }

    /// Whether an element matches `css`.
    pub async fn exists(&self, css: &str) -> bool {
        self.exec(
            "return document.querySelector(arguments[0]) !== null;",
            vec![json!(css)],
        )
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
    }

    /// The page's visible text (for failure messages).
    pub async fn page_text(&self) -> String {
        match self
            .exec(
                "return document.body ? document.body.innerText : document.documentElement.outerHTML;",
                vec![],
            )
            .await
        {
            Ok(v) => v.as_str().unwrap_or_default().to_owned(),
            Err(e) => format!("(no text: {e})"),
        }
    }

    async fn element(&self, css: &str) -> Result<String, DriverError> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "element",
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        Ok(v[ELEMENT].as_str().unwrap_or_default().to_owned())
    }

    /// Clicks the element matching `css`, as a user would.
    pub async fn click(&self, css: &str) {
        let r = async {
            let id = self.element(css).await?;
            self.cmd(
                reqwest::Method::POST,
                &format!("element/{id}/click"),
                json!({}),
            )
            .await
        }
        .await;
        if let Err(e) = r {
            self.fail(&format!("click {css}: {e}")).await;
        }
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let r = async {
            let id = self.element(css).await?;
            self.cmd(
                reqwest::Method::POST,
                &format!("element/{id}/value"),
                json!({ "text": text }),
            )
            .await
        }
        .await;
        if let Err(e) = r {
            // The text may be a secret: never in the message.
            self.fail(&format!("type into {css}: {}: {}", e.command, e.error))
                .await;
        }
    }

    /// Writes the page's screenshot as step `step`; answers its path.
    pub async fn screenshot(&self, step: &str) -> PathBuf {
        let n = self.step.fetch_add(1, Ordering::SeqCst) + 1;
        let dir = screenshot_root().join(&self.test);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{n:02}-{step}.png"));
        let v = self
            .cmd(reqwest::Method::GET, "screenshot", Value::Null)
            .await
            .unwrap_or_else(|e| panic!("screenshot {step}: {e}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Waits until the JavaScript expression `js` is truthy in the page
    /// and answers its value; gives up after `limit` with what it waited
    /// for, the URL and the page's text (and a screenshot).
    pub async fn wait(&self, what: &str, limit: Duration, js: &str) -> Value {
        let script = format!("return ({js});");
        let start = Instant::now();
        let mut last_error = String::new();
        loop {
            match self.exec(&script, vec![]).await {
                Ok(v) if truthy(&v) => return v,
                Ok(_) => {}
                Err(e) => last_error = e.to_string(),
            }
            if start.elapsed() > limit {
                let extra = if last_error.is_empty() {
                    String::new()
                } else {
                    format!(" (last error: {last_error})")
                };
                self.fail(&format!("{what}: not within {limit:?}{extra}"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `css`'s text satisfies `pred`; answers it.
    pub async fn wait_text(
        &self,
        what: &str,
        limit: Duration,
        css: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            let t = self.text(css).await;
            if let Some(t) = t.as_deref().filter(|t| pred(t)) {
                return t.to_owned();
            }
            if start.elapsed() > limit {
                self.fail(&format!(
                    "{what}: not within {limit:?} ({css}: {})",
                    t.as_deref().unwrap_or("absent")
                ))
                .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Panics with `message`, the page's URL and text, and a screenshot.
    pub async fn fail(&self, message: &str) -> ! {
        let url = self.url().await;
        let text = self.page_text().await;
        let shot = self.screenshot("failure").await;
        panic!(
            "{message}\npage {url} (screenshot {}):\n---\n{text}\n---",
            shot.display()
        );
    }

    /// Ends the session (Chromium quits) and the driver.
    pub async fn close(mut self) {
        let _ = self
            .http
            .delete(format!(
                "http://{}/session/{}",
                self.driver_addr, self.session
            ))
            .send()
            .await;
        self.closed = true;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed {
            // No runtime here (a panic, or a test that did not close):
            // quit the session with a plain blocking request.
            let _ = delete_session(self.driver_addr, &self.session);
        }
        // The driver's process group: a Chromium that outlived its
        // session goes with it.
        if let Some(pid) = self.driver.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn delete_session(addr: std::net::SocketAddr, session: &str) -> std::io::Result<()> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "DELETE /session/{session} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    Ok(())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Text with every run of white space made one space, trimmed.
pub fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

//! Benchmark: the operator's console (issue #15's performance targets).
//!
//! One real `rollgate coordinator` with its console (`[http] listen` on a
//! free loopback port), the sandbox Consul with ACLs on and its commit
//! journal, moto, and a service `web` whose instances are light
//! ([`crate::fleet::light`]). A real rollout is started (`rollgate
//! publish`, auto approval) and held in its first batch by a
//! `min_healthy_time` of an hour, so the page shows an active rollout over
//! `old + batch` instances (old ones and the batch's new ones, every check
//! passing) for as long as the bench needs. The operator role's token logs
//! in (`POST /login`), and the bench measures:
//!
//! - **page render**: `GET /services/web` with the session cookie, one
//!   request at a time, from sending to the last byte of the body (loopback;
//!   the server's work is the bulk of it), p50 / p99; `GET
//!   /v1/services/web/rollout` with the token header for comparison;
//! - **change → event**: the operator pauses and resumes the rollout in
//!   turn (`POST /v1/services/web/{pause,resume}`); the coordinator writes
//!   the rollout record with the new phase; the time from that write's
//!   commit (the journal) to the arrival, at a client reading
//!   `GET /services/web/events`, of the first `update` event whose
//!   `#rollout-phase` shows it. With one open stream, then with `streams`
//!   open ones (every stream's arrival is a sample), each change
//!   [`CHANGE_GAP`] after the last one's events; and with one stream,
//!   changes back to back, which shows the console's rate limit on its
//!   Consul reads;
//! - **idle streams' CPU**: the coordinator's utime + stime over `window`
//!   with no stream open, then with `streams` open, nothing changing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use tokio::sync::mpsc;

use crate::acl_roles::Secret;
use crate::consul::ServerHandle;
use crate::fleet::light::{self, LightConfig, LightGroup};
use crate::moto::seed::{ImageSpec, SeedSpec, register_image, seed_group};
use crate::moto::{Moto, REGION};
use crate::node::Binaries;

use super::cpu_ticks;

/// Settings of the console benchmark.
#[derive(Debug, Clone)]
pub struct ConsoleBench {
    /// Instances of the group before the rollout.
    pub old: usize,
    /// Batch size: the page lists `old + batch` instances during the
    /// first batch (the coordinator launches the batch before retiring).
    pub batch: u32,
    /// Timed requests of each page.
    pub requests: usize,
    /// Phase changes timed per stream count.
    pub changes: usize,
    /// Event streams open at once.
    pub streams: usize,
    /// CPU window, each of idle and with streams.
    pub window: Duration,
}

impl Default for ConsoleBench {
    fn default() -> Self {
        Self {
            old: 40,
            batch: 10,
            requests: 500,
            changes: 100,
            streams: 50,
            window: Duration::from_secs(60),
        }
    }
}

/// Results of the console benchmark.
#[derive(Debug, Clone)]
pub struct ConsoleResults {
    /// Settings used.
    pub settings: ConsoleBench,
    /// Instance rows on the service page (`data-instance`).
    pub instances_on_page: usize,
    /// The service page's size, bytes.
    pub page_bytes: usize,
    /// `GET /services/web` times, sorted.
    pub page: Vec<Duration>,
    /// `GET /v1/services/web/rollout` answer size, bytes.
    pub api_bytes: usize,
    /// `GET /v1/services/web/rollout` times, sorted.
    pub api: Vec<Duration>,
    /// The changes with one stream open.
    pub one_stream: Changes,
    /// The same with each change sent as soon as the last one arrived.
    pub back_to_back: Changes,
    /// The changes with `streams` open.
    pub many_streams: Changes,
    /// The coordinator's CPU over the window with no stream open.
    pub idle_cpu: Duration,
    /// The coordinator's CPU over the window with `streams` open.
    pub streams_cpu: Duration,
    /// The window as measured (the longer of the two).
    pub window: Duration,
    /// `update` events received during the streams' window (nothing
    /// changed, so 0 is expected).
    pub idle_updates: usize,
}

/// One Server-Sent Event: its `event` name and its `data` (lines joined
/// with `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event's name (`message` when none is given).
    pub event: String,
    /// Its data.
    pub data: String,
}

/// An incremental parser of a `text/event-stream` body: feed it the bytes
/// as they arrive, it answers the events completed by them. Comments
/// (keepalives) and blocks without data are not events.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    /// Adds `chunk`; answers every event it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some((end, sep)) = block_end(&self.buf) {
            let block: Vec<u8> = self.buf.drain(..end + sep).take(end).collect();
            let text = String::from_utf8_lossy(&block);
            let mut event = String::new();
            let mut data: Vec<&str> = Vec::new();
            for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = value.to_string(),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if !data.is_empty() {
                out.push(SseEvent {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data: data.join("\n"),
                });
            }
        }
        out
    }
}

/// Where the first block of `buf` ends (a blank line): its length and the
/// separator's.
fn block_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The text of the element `id="rollout-phase"` in a page or fragment.
pub fn rollout_phase(html: &str) -> Option<&str> {
    let start = html.find("id=\"rollout-phase\"")?;
    let rest = &html[start..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find('<')?;
    Some(rest[open..open + close].trim())
}

/// The value of the `rollgate_session` cookie in a `Set-Cookie` header.
pub fn session_cookie(set_cookie: &str) -> Option<&str> {
    let pair = set_cookie.split(';').next()?.trim();
    let value = pair.strip_prefix("rollgate_session=")?;
    (!value.is_empty()).then_some(value)
}

/// One `update` event's arrival: which stream, when, the phase it shows.
struct Arrival {
    stream: usize,
    at: Instant,
    phase: String,
}

/// Opens `GET /services/web/events` with `cookie` as stream `n`; every
/// `update` event goes to `tx` with the moment its last bytes arrived.
async fn open_stream(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
    n: usize,
    tx: mpsc::UnboundedSender<Arrival>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut resp = client
        .get(format!("{base}/services/web/events"))
        .header("Cookie", format!("rollgate_session={cookie}"))
        .send()
        .await
        .context("opening the event stream")?;
    ensure!(
        resp.status().is_success(),
        "GET /services/web/events answered {}",
        resp.status()
    );
    Ok(tokio::spawn(async move {
        let mut parser = SseParser::default();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let at = Instant::now();
            for e in parser.push(&chunk) {
                if e.event == "update" {
                    let phase = rollout_phase(&e.data).unwrap_or("").to_string();
                    if tx
                        .send(Arrival {
                            stream: n,
                            at,
                            phase,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    }))
}

/// `requests` timed GETs of `url` (after 20 untimed), each checked 200;
/// answers the times, sorted, and the last body.
async fn time_gets(
    client: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
    requests: usize,
) -> anyhow::Result<(Vec<Duration>, String)> {
    let mut times = Vec::with_capacity(requests);
    let mut body = String::new();
    for i in 0..requests + 20 {
        let mut req = client.get(url);
        if let Some(c) = cookie {
            req = req.header("Cookie", format!("rollgate_session={c}"));
        }
        let sent = Instant::now();
        let resp = req.send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        body = resp.text().await.with_context(|| format!("GET {url}"))?;
        let took = sent.elapsed();
        ensure!(status.is_success(), "GET {url} answered {status}: {body}");
        if i >= 20 {
            times.push(took);
        }
    }
    times.sort();
    Ok((times, body))
}

/// What a run of changes measured (every list sorted).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Record commit → event arrival, every stream's.
    pub samples: Vec<Duration>,
    /// Per change, record commit → the first stream's arrival.
    pub first: Vec<Duration>,
    /// Per change, record commit → the last stream's arrival.
    pub last: Vec<Duration>,
    /// Per change, the operator's request sent → the first stream's
    /// arrival (includes the coordinator applying the command).
    pub from_request: Vec<Duration>,
    /// The coordinator's CPU over the run, per change.
    pub cpu_per_change: Duration,
    /// Requests the sandbox Consul answered over the run (every client),
    /// per change.
    pub consul_requests_per_change: f64,
}

/// How long the timed rows wait after a change's events arrived before the
/// next change. The console's watches read Consul at most 10 times a
/// second after a burst of 5 (`consul::watch::WatchConfig`'s default), so
/// changes less than 100 ms apart queue for their turn; the back-to-back
/// row shows that cost on its own.
const CHANGE_GAP: Duration = Duration::from_millis(250);

/// `changes` pauses and resumes in turn, `gap` apart, each timed from the
/// commit of the record's write with the new phase to its `update` event
/// on every one of `streams` open streams, with the coordinator (`pid`)'s
/// CPU.
#[allow(clippy::too_many_arguments)]
async fn time_changes(
    consul: &ServerHandle,
    pid: u32,
    operator: &reqwest::Client,
    base: &str,
    rx: &mut mpsc::UnboundedReceiver<Arrival>,
    streams: usize,
    changes: usize,
    gap: Duration,
) -> anyhow::Result<Changes> {
    let key = "rollgate/services/web/rollout";
    let mut out = Changes::default();
    let cpu_before = cpu_ticks(pid).context("reading the coordinator's /proc/PID/stat")?;
    let requests_before = consul.requests();
    for i in 0..changes {
        let (action, phase) = if i % 2 == 0 {
            ("pause", "paused")
        } else {
            ("resume", "launching")
        };
        tokio::time::sleep(gap).await;
        // Whatever arrived before this change is not about it.
        while rx.try_recv().is_ok() {}
        let from = consul.journal().context("no journal")?.kv_writes().len();
        let sent = Instant::now();
        let resp = operator
            .post(format!("{base}/v1/services/web/{action}"))
            .send()
            .await
            .with_context(|| format!("POST /v1/services/web/{action}"))?;
        let status = resp.status();
        ensure!(
            status.is_success(),
            "POST /v1/services/web/{action} answered {status}: {}",
            resp.text().await.unwrap_or_default()
        );
        let mut arrived: Vec<Option<Instant>> = vec![None; streams];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while arrived.iter().any(Option::is_none) {
            let a = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .with_context(|| {
                    format!(
                        "change {i} ({action}): {} of {streams} streams showed `{phase}` within 20 s",
                        arrived.iter().flatten().count()
                    )
                })?
                .context("every stream ended")?;
            if a.phase == phase && a.stream < streams && arrived[a.stream].is_none() {
                arrived[a.stream] = Some(a.at);
            }
        }
        let journal = consul.journal().context("no journal")?;
        let commit = journal.kv_writes()[from..]
            .iter()
            .filter(|w| w.key == key)
            .find(|w| {
                serde_json::from_slice::<serde_json::Value>(&w.value)
                    .is_ok_and(|v| v["state"]["state"].as_str() == Some(phase))
            })
            .with_context(|| format!("change {i}: the journal has no record write in `{phase}`"))?;
        let committed = journal
            .commit_time(commit.index)
            .with_context(|| format!("index {} has no commit time", commit.index))?;
        let arrived: Vec<Instant> = arrived.into_iter().flatten().collect();
        for at in &arrived {
            out.samples.push(at.saturating_duration_since(committed));
        }
        if let (Some(first), Some(last)) = (arrived.iter().min(), arrived.iter().max()) {
            out.first.push(first.saturating_duration_since(committed));
            out.last.push(last.saturating_duration_since(committed));
            out.from_request.push(first.saturating_duration_since(sent));
        }
    }
    let cpu = cpu_ticks(pid).context("reading the coordinator's /proc/PID/stat")?;
    let n = u32::try_from(changes.max(1)).unwrap_or(u32::MAX);
    out.cpu_per_change = Duration::from_millis(cpu.saturating_sub(cpu_before) * 10) / n;
    out.consul_requests_per_change =
        consul.requests().saturating_sub(requests_before) as f64 / f64::from(n);
    for v in [
        &mut out.samples,
        &mut out.first,
        &mut out.last,
        &mut out.from_request,
    ] {
        v.sort();
    }
    Ok(out)
}

/// The coordinator's CPU (utime + stime) over `window`, and the window
/// as measured.
async fn cpu_over(pid: u32, window: Duration) -> anyhow::Result<(Duration, Duration)> {
    let before = cpu_ticks(pid).context("reading the coordinator's /proc/PID/stat")?;
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let after = cpu_ticks(pid).context("reading the coordinator's /proc/PID/stat")?;
    Ok((
        Duration::from_millis(after.saturating_sub(before) * 10),
        start.elapsed(),
    ))
}

/// Runs the benchmark in `dir`.
pub async fn run(
    settings: ConsoleBench,
    bins: &Binaries,
    dir: &Path,
) -> anyhow::Result<ConsoleResults> {
    let super::world::BenchConsul {
        consul,
        roles,
        http,
    } = super::world::consul(dir, None).await?;
    let consul = Arc::new(consul);
    let addr = consul.http_addr();
    let agent_token = roles
        .secret("agent")
        .cloned()
        .context("no agent role token")?;
    let operator_token: Secret = roles
        .secret("operator")
        .cloned()
        .context("no operator role token (config/acl/operator.hcl)")?;
    let moto = Moto::start()
        .await
        .context("starting moto (bash sandbox/scripts/prerequisites)")?;
    seed_group(
        &moto,
        &SeedSpec::new(
            "web-asg",
            ImageSpec::new("acmeinc/web", "1.0.0"),
            i32::try_from(settings.old).context("too many instances")?,
        ),
    )
    .await?;
    let fleet = light::start(
        Arc::clone(&consul),
        LightConfig {
            aws: moto.sdk_config(),
            groups: vec![LightGroup {
                group: "web-asg".into(),
                service: "web".into(),
            }],
            poll: Duration::from_secs(1),
            agent_token,
        },
    );
    wait_passing(&http, addr, settings.old).await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let text = |role: &str| {
        format!(
            "[consul]\naddress = \"http://{addr}\"\ntoken_file = {token:?}\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [coordinator]\nregistry_poll = \"1h\"\naws_region = \"{REGION}\"\naws_endpoint = \"{moto}\"\n\n\
             [[services]]\nname = \"web\"\nauto_scaling_group = \"web-asg\"\nlaunch_template = \"web-asg-lt\"\n\
             artifact = \"acmeinc/web\"\napproval = \"auto\"\n\n[services.rollout]\nbatch_size = {batch}\n\
             min_healthy_time = \"1h\"\nhealthy_deadline = \"2h\"\nprogress_deadline = \"3h\"\n",
            moto = moto.endpoint(),
            batch = settings.batch,
            token = dir.join(format!("{role}.token")).display().to_string(),
        )
    };
    let config = dir.join("console-coordinator.toml");
    std::fs::write(&config, text("coordinator"))?;
    let ci_config = dir.join("console-ci.toml");
    std::fs::write(&ci_config, text("ci"))?;
    let log = std::fs::File::create(dir.join("console-coordinator.log"))?;
    let mut coordinator = super::world::spawn_coordinator(bins, &config, Some(log))?;
    let pid = coordinator.id().context("the coordinator has no PID")?;

    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let started = Instant::now();
    while !client
        .get(format!("{base}/login"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the console at {base} did not answer within 60 s (see {})",
                dir.join("console-coordinator.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The rollout: a new image, published; held in its first batch.
    let spec = ImageSpec::new("unpublished/web", "1.1.0").tag("sandbox:boot-delay", "2000ms");
    let image = register_image(&moto.sdk_config(), &spec).await?;
    super::world::publish(bins, &ci_config, "acmeinc/web", &image, "1.1.0").await?;
    let total = settings.old + settings.batch as usize;
    wait_passing(&http, addr, total).await?;
    let started = Instant::now();
    loop {
        let record = crate::observe::kv_json(&http, addr, "rollgate/services/web/rollout").await;
        let state = record.as_ref().and_then(|r| r["state"]["state"].as_str());
        let new = record
            .as_ref()
            .and_then(|r| r["state"]["new"].as_array())
            .map_or(0, Vec::len);
        if state == Some("launching") && new == settings.batch as usize {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "the rollout did not reach its first batch in 2 minutes (state {state:?}, {new} new)"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the coordinator's and the light fleet's writes settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Log in as the operator.
    let resp = client
        .post(format!("{base}/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("token", operator_token.expose())
                .finish(),
        )
        .send()
        .await
        .context("POST /login")?;
    ensure!(
        resp.status() == reqwest::StatusCode::SEE_OTHER,
        "POST /login answered {} (expected 303)",
        resp.status()
    );
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session_cookie)
        .context("POST /login set no rollgate_session cookie")?
        .to_string();
    let operator = crate::acl_roles::http_client(&operator_token, Duration::from_secs(30))?;

    // (a) The page, and the API's rollout for comparison.
    let (page, html) = time_gets(
        &client,
        &format!("{base}/services/web"),
        Some(&cookie),
        settings.requests,
    )
    .await?;
    let instances_on_page = html.matches("data-instance=\"").count();
    ensure!(
        rollout_phase(&html) == Some("launching"),
        "the service page shows no rollout in `launching` (phase {:?})",
        rollout_phase(&html)
    );
    ensure!(
        instances_on_page == total,
        "the service page lists {instances_on_page} instances, not {total}"
    );
    let (api, json) = time_gets(
        &operator,
        &format!("{base}/v1/services/web/rollout"),
        None,
        settings.requests,
    )
    .await?;

    // (c) baseline: no stream open.
    let (idle_cpu, w1) = cpu_over(pid, settings.window).await?;

    // (b) one stream.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let streams_client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(settings.streams + 1)
        .build()?;
    let mut tasks = vec![open_stream(&streams_client, &base, &cookie, 0, tx.clone()).await?];
    wait_first(&mut rx, 1).await?;
    let one_stream = time_changes(
        &consul,
        pid,
        &operator,
        &base,
        &mut rx,
        1,
        settings.changes,
        CHANGE_GAP,
    )
    .await?;
    let back_to_back = time_changes(
        &consul,
        pid,
        &operator,
        &base,
        &mut rx,
        1,
        settings.changes,
        Duration::ZERO,
    )
    .await?;

    // (c) with `streams` open, nothing changing.
    for n in 1..settings.streams {
        tasks.push(open_stream(&streams_client, &base, &cookie, n, tx.clone()).await?);
    }
    wait_first(&mut rx, settings.streams - 1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    while rx.try_recv().is_ok() {}
    let (streams_cpu, w2) = cpu_over(pid, settings.window).await?;
    let mut idle_updates = 0;
    while rx.try_recv().is_ok() {
        idle_updates += 1;
    }

    // (b) with `streams` open.
    let many_streams = time_changes(
        &consul,
        pid,
        &operator,
        &base,
        &mut rx,
        settings.streams,
        settings.changes,
        CHANGE_GAP,
    )
    .await?;

    for t in tasks {
        t.abort();
    }
    let _ = coordinator.start_kill();
    let _ = coordinator.wait().await;
    fleet.shutdown().await;
    if let Ok(consul) = Arc::try_unwrap(consul) {
        consul.shutdown().await;
    }
    let _ = moto.shutdown();
    Ok(ConsoleResults {
        settings,
        instances_on_page,
        page_bytes: html.len(),
        page,
        api_bytes: json.len(),
        api,
        one_stream,
        back_to_back,
        many_streams,
        idle_cpu,
        streams_cpu,
        window: w1.max(w2),
        idle_updates,
    })
}

/// Waits until Consul lists `n` passing instances of `web`.
async fn wait_passing(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    n: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let passing = crate::observe::passing(http, addr, "web").await.len();
        if passing >= n {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(180) {
            bail!("only {passing} of {n} instances of web became passing in 3 minutes");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits for the first `update` event of `n` newly opened streams.
async fn wait_first(rx: &mut mpsc::UnboundedReceiver<Arrival>, n: usize) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < n {
        let a = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .with_context(|| {
                format!(
                    "{} of {n} new streams sent a first update in 30 s",
                    seen.len()
                )
            })?
            .context("every stream ended")?;
        seen.insert(a.stream);
    }
    Ok(())
}

/// The load averages of `/proc/loadavg` (1, 5, 15 minutes).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Markdown for the console scenario.
pub fn section(r: &ConsoleResults, command: &str) -> String {
    use super::{ms, provenance, quantile};
    use std::fmt::Write as _;
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let pair = |v: &[Duration]| format!("{} / {}", ms(quantile(v, 0.5)), ms(quantile(v, 0.99)));
    let st = &r.settings;
    let window = r.window.as_secs_f64().max(0.001);
    let idle = r.idle_cpu.as_secs_f64() / window * 100.0;
    let streams = r.streams_cpu.as_secs_f64() / window * 100.0;
    let page_p99 = quantile(&r.page, 0.99);
    let one_p99 = quantile(&r.one_stream.samples, 0.99);
    let many_p99 = quantile(&r.many_streams.samples, 0.99);
    let mut s = String::new();
    let _ = writeln!(s, "## Operator console\n");
    let _ = writeln!(s, "| measure | value | target | |");
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(
        s,
        "| service page `GET /services/web` ({} instances, active rollout, {:.0} KiB), p50 / p99 of {} | {} | p99 < 20 ms | {} |",
        r.instances_on_page,
        r.page_bytes as f64 / 1024.0,
        r.page.len(),
        pair(&r.page),
        verdict(page_p99 < Duration::from_millis(20))
    );
    let _ = writeln!(
        s,
        "| for comparison: `GET /v1/services/web/rollout` ({:.0} KiB), p50 / p99 of {} | {} | | |",
        r.api_bytes as f64 / 1024.0,
        r.api.len(),
        pair(&r.api)
    );
    let _ = writeln!(
        s,
        "| KV change (rollout record commit) → `update` event, 1 open stream, p50 / p99 of {} | {} | p99 < 100 ms | {} |",
        r.one_stream.samples.len(),
        pair(&r.one_stream.samples),
        verdict(one_p99 < Duration::from_millis(100))
    );
    let _ = writeln!(
        s,
        "| the same, {} streams open, every stream's arrival, p50 / p99 of {} | {} | p99 < 100 ms | {} |",
        st.streams,
        r.many_streams.samples.len(),
        pair(&r.many_streams.samples),
        verdict(many_p99 < Duration::from_millis(100))
    );
    let _ = writeln!(
        s,
        "| the same, 1 stream, changes back to back (each sent the moment the last one's event arrived; the console's watches read Consul at most 10 times a second after a burst of 5), p50 / p99 of {} | {} | | |",
        r.back_to_back.samples.len(),
        pair(&r.back_to_back.samples)
    );
    let _ = writeln!(
        s,
        "| of which, per change: the first stream's event / the last stream's, p50 | {} / {} | | |",
        ms(quantile(&r.many_streams.first, 0.5)),
        ms(quantile(&r.many_streams.last, 0.5))
    );
    for (streams, c) in [(1, &r.one_stream), (st.streams, &r.many_streams)] {
        let _ = writeln!(
            s,
            "| per change with {streams} stream(s) open: coordinator CPU / Consul requests (every client) | {} / {:.0} | | |",
            ms(c.cpu_per_change),
            c.consul_requests_per_change
        );
    }
    let _ = writeln!(
        s,
        "| operator's `POST /v1/services/web/{{pause,resume}}` sent → event, 1 stream (includes the coordinator applying it), p50 / p99 | {} | | |",
        pair(&r.one_stream.from_request)
    );
    let _ = writeln!(
        s,
        "| coordinator CPU, {} idle event streams open, nothing changing ({:.0} s) | {streams:.2} % of one core | < 5 % | {} |",
        st.streams,
        window,
        verdict(streams < 5.0)
    );
    let _ = writeln!(
        s,
        "| coordinator CPU, no stream open, same rollout (baseline) | {idle:.2} % of one core | | |"
    );
    let _ = writeln!(
        s,
        "| `update` events during the idle window (nothing changed) | {} | 0 | {} |",
        r.idle_updates,
        verdict(r.idle_updates == 0)
    );
    let _ = writeln!(s);
    provenance(&mut s, command);
    let _ = writeln!(
        s,
        "- Load average when the section was written (1, 5, 15 min; other work shares the machine): {}",
        load_average()
    );
    let _ = writeln!(
        s,
        "- Method: the sandbox Consul (ACLs on, commit journal), moto, {} light instances of `web` \
         (`sandbox/src/fleet/light.rs`), one real `rollgate coordinator` with `[http] listen` on loopback. \
         A real rollout (`rollgate publish` of a new image, auto approval, batch {}) held in its first batch by \
         `min_healthy_time = 1h`: the page shows the rollout in `launching` over {} instances (old and new, every \
         check passing). The operator role's token logs in with `POST /login`; the cookie goes with every page \
         request. Page and API: {} sequential requests each after 20 untimed, from sending to the body's last \
         byte, measured by the bench over loopback (so an upper bound of the server's time). KV change: the \
         operator pauses and resumes the rollout in turn ({} changes per row, {} ms after the last change's events \
         arrived, except in the back-to-back row) through the API; the coordinator \
         writes the rollout record with the new phase; from that write's commit (the sandbox Consul's journal, \
         taken under the store's lock) to the moment the chunk holding the first `update` event whose \
         `#rollout-phase` shows the new phase reached the bench's reader of `GET /services/web/events`. CPU: \
         the coordinator's utime+stime from /proc/PID/stat (10 ms ticks) over each window; the streams' own \
         cost is the difference from the baseline.",
        st.old,
        st.batch,
        r.instances_on_page,
        st.requests,
        st.changes,
        CHANGE_GAP.as_millis()
    );
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_are_parsed_across_chunks_and_comments_skipped() {
        let mut p = SseParser::default();
        assert!(p.push(b": keepalive\n\nevent: upd").is_empty());
        assert!(p.push(b"ate\ndata: <div id=\"live\">\ndata:").is_empty());
        let got = p.push(b" <p>x</p></div>\n\ndata: plain\r\n\r\n: keepalive\n\n");
        assert_eq!(
            got,
            vec![
                SseEvent {
                    event: "update".into(),
                    data: "<div id=\"live\">\n<p>x</p></div>".into()
                },
                SseEvent {
                    event: "message".into(),
                    data: "plain".into()
                },
            ]
        );
        // A block split inside a multi-byte character is kept whole.
        let text = "event: update\ndata: é\n\n".as_bytes();
        let cut = text.len() - 4;
        assert!(p.push(&text[..cut]).is_empty());
        assert_eq!(p.push(&text[cut..])[0].data, "é");
    }

    #[test]
    fn phase_and_cookie_are_read() {
        let html = "<p>Phase <strong id=\"rollout-phase\">paused</strong> · batch";
        assert_eq!(rollout_phase(html), Some("paused"));
        assert_eq!(rollout_phase("<div id=\"no-rollout\"></div>"), None);
        assert_eq!(
            session_cookie("rollgate_session=abc123; HttpOnly; SameSite=Strict; Path=/"),
            Some("abc123")
        );
        assert_eq!(session_cookie("other=1; Path=/"), None);
        assert_eq!(session_cookie("rollgate_session=; Max-Age=0"), None);
    }
}

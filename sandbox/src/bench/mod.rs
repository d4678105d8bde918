//! `sandbox bench`: the benchmark scenarios behind `BENCHMARKS.md`.
//!
//! Each scenario measures, then its section of `BENCHMARKS.md` is replaced
//! (between `<!-- bench:NAME -->` markers) with a table, the machine, the date
//! and the exact command, so every figure in that file comes from this
//! command. Timing is measured here, never asserted in tests.

pub mod agent;
pub mod aws_tap;
pub mod console;
pub mod failfast;
pub mod rollout;
pub mod scale;
pub mod takeover;
pub mod watcher;
mod world;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// A description of this machine for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB RAM, Linux")
}

/// Today's date (UTC), `YYYY-MM-DD`, from the system clock.
pub fn today() -> String {
    humantime::format_rfc3339(std::time::SystemTime::now())
        .to_string()
        .chars()
        .take(10)
        .collect()
}

/// The command, machine and date lines every section ends with.
fn provenance(s: &mut String, command: &str) {
    let _ = writeln!(s, "- Command: `{command}`");
    let _ = writeln!(s, "- Machine: {}", machine());
    let _ = writeln!(s, "- Date: {}", today());
}

/// The wall clock in milliseconds since the epoch, as the coordinator
/// stamps its records (`plan::now_ms`).
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Samples as whole milliseconds, comma-separated.
fn whole_ms<'a>(samples: impl Iterator<Item = &'a Duration>) -> String {
    samples
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The value at quantile `q` (0..=1) of sorted `values`.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A `key:` line's number in /proc/PID/status (kB for memory lines).
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in clock ticks (USER_HZ, 100 per second).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Markdown for the agent scenario.
pub fn agent_section(r: &agent::AgentResults, command: &str) -> String {
    let mut s = String::new();
    let target = r.settings.check_interval + Duration::from_millis(100);
    let p50 = quantile(&r.ready_to_passing, 0.5);
    let max = r.ready_to_passing.last().copied().unwrap_or_default();
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let _ = writeln!(s, "## Node agent footprint and reaction\n");
    let _ = writeln!(s, "| measure | value | target | |");
    let _ = writeln!(s, "|---|---|---|---|");
    // The target is 10 MB, decimal: 10,000,000 bytes (9.54 MiB).
    let _ = writeln!(
        s,
        "| idle resident memory (VmRSS) | {:.1} MiB ({:.1} MB) | ≤ 10 MB (9.54 MiB) | {} |",
        r.rss_kib as f64 / 1024.0,
        r.rss_kib as f64 * 1.024 / 1000.0,
        verdict(r.rss_kib * 1024 <= 10_000_000)
    );
    let _ = writeln!(
        s,
        "| peak resident memory (VmHWM) | {:.1} MiB | | |",
        r.peak_rss_kib as f64 / 1024.0
    );
    let _ = writeln!(
        s,
        "| of which anonymous (heap, stacks) | {:.1} MiB | | |",
        r.anon_kib as f64 / 1024.0
    );
    let _ = writeln!(
        s,
        "| of which file-backed (code and read-only data of the binary and libc: shared, reclaimable) | {:.1} MiB | | |",
        r.file_kib as f64 / 1024.0
    );
    let _ = writeln!(
        s,
        "| CPU over {} of steady state | {:.3} % of one core | ≤ 0.1 % | {} |",
        humantime::format_duration(r.settings.window),
        r.cpu_percent,
        verdict(r.cpu_percent <= 0.1)
    );
    let _ = writeln!(
        s,
        "| app ready → passing in Consul, p50 ({} runs) | {} | ≤ check interval ({}) + 100 ms | {} |",
        r.ready_to_passing.len(),
        ms(p50),
        humantime::format_duration(r.settings.check_interval),
        verdict(p50 <= target)
    );
    let _ = writeln!(
        s,
        "| app ready → passing in Consul, max | {} | ≤ {} | {} |",
        ms(max),
        ms(target),
        verdict(max <= target)
    );
    let _ = writeln!(
        s,
        "\nAll runs (ms): {}\n",
        whole_ms(r.ready_to_passing.iter())
    );
    provenance(&mut s, command);
    let _ = writeln!(
        s,
        "- Method: one simulated node (sandbox IMDS, the `web` and `rollgate` binaries beside the `sandbox` binary that ran, \
         i.e. the cargo profile in the command's path, built as images/ builds them: `cargo build --profile dist -p rollgate -p web` \
         after `-p sandbox`, since one command for all three unifies dependency features and links a larger `rollgate`; \
         `rollgate agent` runs on a one-thread runtime) \
         against the sandbox Consul. Memory from /proc/PID/status and, by mapping, /proc/PID/smaps at the end of the window; \
         CPU from utime+stime in /proc/PID/stat over the window (10 ms ticks; other processes' load on the machine adds noise). \
         Ready→passing: the app boots with a delay of 2 s plus a different fraction of the check interval per run (so checks land at every phase); the time from its /health first answering 200 (polled every 5 ms) \
         to a blocking query on /v1/health/service/web?passing returning it."
    );
    let _ = writeln!(
        s,
        "- Resident by mapping (KiB; the anonymous part, written pages, in parentheses): {}",
        r.mappings
            .iter()
            .map(|m| if m.anon_kib > 0 && m.anon_kib < m.rss_kib {
                format!("{} {} ({} anon.)", m.name, m.rss_kib, m.anon_kib)
            } else {
                format!("{} {}", m.name, m.rss_kib)
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    s
}

/// p50 / p99 of `values`, sorted here.
fn p50_p99(mut values: Vec<Duration>) -> String {
    values.sort();
    format!(
        "{} / {}",
        ms(quantile(&values, 0.5)),
        ms(quantile(&values, 0.99))
    )
}

/// The rows that take the gate reaction apart (see
/// [`rollout::GateParts`]), for the rollout and scale sections.
/// The gate rows both scenarios print: the gate reaction (the gate → the
/// coordinator's first acting request at the AWS tap) against `target`,
/// the end-to-end time to the record's commit (moto's answer included),
/// and the parts.
fn gate_rows(
    s: &mut String,
    reactions: &[Duration],
    parts: &[rollout::GateParts],
    target: Duration,
) {
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let col = |f: fn(&rollout::GateParts) -> Duration| p50_p99(parts.iter().map(f).collect());
    let mut coordinator: Vec<Duration> = parts.iter().map(|p| p.coordinator).collect();
    coordinator.sort();
    let _ = writeln!(
        s,
        "| **gate reaction**: gate → the coordinator's first acting request (`SetInstanceProtection`) at the AWS tap, p50 ({} batches) | {} | | |",
        coordinator.len(),
        ms(quantile(&coordinator, 0.5))
    );
    let p99 = quantile(&coordinator, 0.99);
    let _ = writeln!(
        s,
        "| **gate reaction p99**, from the commit of the health change | {} | ≤ {} | {} |",
        ms(p99),
        ms(target),
        verdict(!coordinator.is_empty() && p99 <= target)
    );
    let _ = writeln!(
        s,
        "| gate reaction max | {} | | |",
        ms(coordinator.last().copied().unwrap_or_default())
    );
    let _ = writeln!(
        s,
        "| of which: health commit → the coordinator's health read seeing it, p50 / p99 | {} | | |",
        col(|p| p.seen)
    );
    let waited = parts.iter().filter(|p| !p.describes.is_zero()).count();
    let _ = writeln!(
        s,
        "| of which: AWS describe calls it waited for ({waited} of {} gates waited for one), p50 / p99 | {} | | |",
        parts.len(),
        col(|p| p.describes)
    );
    let _ = writeln!(
        s,
        "| then: moto answering that request, p50 / p99 | {} | | |",
        col(|p| p.moto)
    );
    let _ = writeln!(
        s,
        "| then: moto's answer → the record's commit (notice enqueued, fenced write), p50 / p99 | {} | | |",
        col(|p| p.record)
    );
    let _ = writeln!(
        s,
        "| end to end: gate → the record's commit (moto's answer included), p50 / p99 / max ({} batches) | {} / {} / {} | | |",
        reactions.len(),
        ms(quantile(reactions, 0.5)),
        ms(quantile(reactions, 0.99)),
        ms(reactions.last().copied().unwrap_or_default())
    );
}

/// The Method text's definition of the gate reaction and its parts.
const GATE_DEFINITION: &str = "Gate: the commit at which the batch's last new instance's last check \
    turned passing, plus min_healthy_time (the machine accepts an instance that has passed that long). \
    Gate reaction: from the gate to the arrival of the coordinator's first request acting on it \
    (`SetInstanceProtection` of the batch) at an AWS tap (`sandbox/src/bench/aws_tap.rs`, a pass-through proxy \
    in front of moto that only the coordinator uses; it timestamps each request's arrival and moto's answer), \
    including any AWS describe it waited for first. Of it: the health commit → the coordinator's health read \
    that first saw the batch passing (the record's `passing_since`, the coordinator's clock). Then, outside \
    the coordinator: moto answering that request, and from moto's answer to the commit of the rollout \
    record's move from `launching` to `retiring`; end to end is the gate to that commit (the gate reaction's \
    end point until 2026-12-05: what moto, a Python process, takes to answer is the emulator's time, not the \
    coordinator's reaction, so it is shown beside it instead of inside it).";

/// Markdown for the rollout scenario.
pub fn rollout_section(r: &rollout::RolloutResults, command: &str) -> String {
    let mut s = String::new();
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let mut durations = r.durations.clone();
    durations.sort();
    let median = quantile(&durations, 0.5);
    let nominal = median.as_secs_f64() / r.floor.as_secs_f64().max(0.001);
    let floors = r.measured_floors();
    let mut ratios: Vec<f64> = r
        .durations
        .iter()
        .zip(&floors)
        .map(|(d, f)| d.as_secs_f64() / f.as_secs_f64().max(0.001))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN);
    let mut boots: Vec<Duration> = r.boots.iter().flatten().copied().collect();
    boots.sort();
    let st = &r.settings;
    let _ = writeln!(s, "## Rollout gate reaction and overhead\n");
    let _ = writeln!(s, "| measure | value | target | |");
    let _ = writeln!(s, "|---|---|---|---|");
    gate_rows(&mut s, &r.reactions, &r.parts, Duration::from_millis(10));
    let _ = writeln!(
        s,
        "| rollout wall time, median of {} | {:.1} s | | |",
        durations.len(),
        median.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| batch boot as measured (launch → last new instance passing), p50 / max | {:.2} s / {:.2} s | | |",
        quantile(&boots, 0.5).as_secs_f64(),
        boots.last().copied().unwrap_or_default().as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| overhead: wall time / floor Σ(measured boot + min_healthy_time), median | {ratio:.3} | ≤ 1.05 | {} |",
        verdict(ratio <= 1.05)
    );
    let _ = writeln!(
        s,
        "| wall time / nominal floor, batches × (boot delay + min_healthy_time) = {:.1} s | {nominal:.2} | | |",
        r.floor.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "\nGate reactions (ms): {}\n",
        whole_ms(r.reactions.iter())
    );
    provenance(&mut s, command);
    let _ = writeln!(
        s,
        "- Method: {} instances, batch {}, app boot delay {}, min_healthy_time {}, one coordinator (auto approval), \
         the fleet simulator (real `web` and `rollgate agent` per instance, checks every 1 s) against moto and the sandbox Consul. \
         Every time is a commit time from the sandbox Consul's journal (when the index of the write was published, \
         taken under the store's lock), not a poll. {GATE_DEFINITION} \
         Wall time: from the rollout record's first commit to the commit of the plan's outcome. Floor: per batch, its boot \
         as measured (from the commit that put the batch in `launching` to its gate commit: the app's boot delay, \
         the simulator starting the processes, and the first round of the HTTP and TTL checks, which run every 1 s) plus \
         min_healthy_time; what remains above it is the coordinator's own time (preparing, gate reactions, retiring, \
         restoring). The nominal floor ignores process start and check intervals, so no coordinator could reach it.",
        st.instances,
        st.batch,
        humantime::format_duration(st.boot_delay),
        humantime::format_duration(st.min_healthy)
    );
    s
}

/// Markdown for the scale scenario.
pub fn scale_section(r: &scale::ScaleResults, command: &str) -> String {
    let mut s = String::new();
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let st = &r.settings;
    let window = r.window.as_secs_f64().max(0.001);
    let cpu_share = r.cpu.as_secs_f64() / window * 100.0;
    let rss_mib = r.peak_rss_kib as f64 / 1024.0;
    let _ = writeln!(s, "## One coordinator, many services\n");
    let _ = writeln!(s, "| measure | value | target | |");
    let _ = writeln!(s, "|---|---|---|---|");
    gate_rows(&mut s, &r.reactions, &r.parts, Duration::from_millis(50));
    let _ = writeln!(
        s,
        "| coordinator CPU over the window ({:.0} s) | {cpu_share:.1} % of one core ({:.1} CPU s) | ≤ 50 % | {} |",
        window,
        r.cpu.as_secs_f64(),
        verdict(cpu_share <= 50.0)
    );
    let _ = writeln!(
        s,
        "| coordinator peak resident memory (VmHWM) | {rss_mib:.1} MiB | ≤ 100 MiB | {} |",
        verdict(rss_mib <= 100.0)
    );
    let _ = writeln!(
        s,
        "| Consul requests per second, every client | {:.0} | | |",
        r.consul_requests as f64 / window
    );
    let _ = writeln!(
        s,
        "| rollout wall time per service, min / median / max | {:.1} s / {:.1} s / {:.1} s | | |",
        r.durations
            .first()
            .copied()
            .unwrap_or_default()
            .as_secs_f64(),
        quantile(&r.durations, 0.5).as_secs_f64(),
        r.durations
            .last()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
    );
    let _ = writeln!(
        s,
        "\nThe coordinator's AWS calls over the window (count, mean time in moto): {}\n",
        r.aws_calls
            .iter()
            .map(|(a, n, mean)| format!("{a} {n} ({})", ms(*mean)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    provenance(&mut s, command);
    let _ = writeln!(
        s,
        "- Method: {} services of {} instances each (moto), batch {}, new images booting in {}, min_healthy_time {}, \
         one real `rollgate coordinator` with auto approval for all of them; every service's new image published at the \
         same moment. Instances are light (`sandbox/src/fleet/light.rs`): a Consul node and the registration \
         `rollgate agent` makes (same IDs and Meta, a TTL check starting at warning, turned passing after the boot \
         delay) without processes. Every time is a commit time from the sandbox Consul's journal. {GATE_DEFINITION} \
         CPU: utime+stime of the coordinator from the first publish to the last outcome. Consul requests: \
         every `/v1/` request in that window, from every client (the coordinator, the simulator, the bench's polling \
         every 500 ms).",
        st.services,
        st.instances,
        st.batch,
        humantime::format_duration(st.boot_delay),
        humantime::format_duration(st.min_healthy)
    );
    s
}

/// Markdown for the watcher scenario.
pub fn watcher_section(r: &watcher::WatcherResults, command: &str) -> String {
    let mut s = String::new();
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let st = &r.settings;
    let p50 = quantile(&r.latencies, 0.5);
    let p99 = quantile(&r.latencies, 0.99);
    let max = r.latencies.last().copied().unwrap_or_default();
    let e50 = quantile(&r.enqueue_started, 0.5);
    let e99 = quantile(&r.enqueue_started, 0.99);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let _ = writeln!(
        s,
        "## Health watcher throughput
"
    );
    let _ = writeln!(s, "| measure | value | target | |");
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(
        s,
        "| changes matched to exactly one enqueued alert | {} of {} | all | {} |",
        r.matched,
        st.changes,
        verdict(r.matched == st.changes)
    );
    let _ = writeln!(s, "| change → alert enqueued, p50 | {} | | |", ms(p50));
    let _ = writeln!(
        s,
        "| change → alert enqueued, p99 | {} | < 200 ms | {} |",
        ms(p99),
        verdict(p99 < Duration::from_millis(200))
    );
    let _ = writeln!(s, "| change → alert enqueued, max | {} | | |", ms(max));
    let _ = writeln!(
        s,
        "| change → enqueue started (the entry's `enqueued_ms`), p50 / p99 | {} / {} | | |",
        ms(e50),
        ms(e99)
    );
    let _ = writeln!(
        s,
        "| watcher CPU over the change window ({:.1} s) | {:.1} % of one core ({:.2} CPU s) | | |",
        r.window.as_secs_f64(),
        r.cpu_percent,
        r.cpu_window_secs
    );
    let _ = writeln!(
        s,
        "| watcher CPU since start (baseline and changes) | {:.2} CPU s | | |",
        r.cpu_total_secs
    );
    let _ = writeln!(
        s,
        "| watcher peak resident memory (VmHWM) | {:.1} MiB | < 100 MB | {} |",
        mib(r.peak_rss_kib),
        verdict(r.peak_rss_kib * 1024 < 100_000_000)
    );
    let _ = writeln!(
        s,
        "| watcher resident memory at the end (VmRSS) | {:.1} MiB | | |",
        mib(r.rss_kib)
    );
    let _ = writeln!(
        s,
        "| watcher start → baseline (first alert) | {:.1} s | | |",
        r.baseline_time.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "\nOne `/v1/health/state/any` answer: {:.1} MiB ({} checks); seeding took {:.1} s.\n",
        r.health_bytes as f64 / 1024.0 / 1024.0,
        st.instances * st.checks_per_instance + st.nodes + 1,
        r.seed_time.as_secs_f64()
    );
    provenance(&mut s, command);
    let _ = writeln!(
        s,
        "- Method: the sandbox Consul (in the bench process) with {} service instances × {} TTL checks on {} nodes, \
         each instance alone in its alert group (service, node). The real `rollgate watch` (the binary beside the `sandbox` \
         binary that ran) as its own process, `change_threshold = 0`, `group_wait = 0`, delivering to the Slack stand-in's \
         webhook; its baseline is proven by a sentinel check's alert before the changes. {} changes (passing → critical or \
         warning, each on another instance) evenly over {}, through the node agents' `PUT /v1/agent/check/update/:id`; a \
         change's time is taken just before its request is sent. Enqueued: when a blocking query (`?keys`) on the outbox \
         prefix first returns the entry; entries are then matched to changes by content (node, check ID, status). CPU: \
         utime+stime from /proc/PID/stat from the first change to the last alert seen; memory from /proc/PID/status.",
        st.instances,
        st.checks_per_instance,
        st.nodes,
        st.changes,
        humantime::format_duration(st.spread)
    );
    if !r.unexpected.is_empty() {
        let _ = writeln!(
            s,
            "- Unexpected outbox entries (matching no change): {}",
            r.unexpected.join(", ")
        );
    }
    s
}

/// Markdown for the takeover scenario.
pub fn takeover_section(r: &takeover::TakeoverResults, command: &str) -> String {
    let mut s = String::new();
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let takeovers = r.takeovers();
    let freed = r.freed();
    let p99 = quantile(&takeovers, 0.99);
    let st = &r.settings;
    let _ = writeln!(s, "## Leader takeover after SIGKILL\n");
    let _ = writeln!(s, "| measure | value | target | |");
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(
        s,
        "| takeover (SIGKILL → the other replica holds the lock), min / p50 | {} / {} | | |",
        secs(takeovers.first().copied().unwrap_or_default()),
        secs(quantile(&takeovers, 0.5))
    );
    let _ = writeln!(
        s,
        "| takeover p99 ({} kills) | {} | ≤ 5 s | {} |",
        takeovers.len(),
        secs(p99),
        verdict(p99 <= Duration::from_secs(5))
    );
    let _ = writeln!(
        s,
        "| takeover max | {} | | |",
        secs(takeovers.last().copied().unwrap_or_default())
    );
    let _ = writeln!(
        s,
        "| of which: SIGKILL → lock freed (liveness check TTL ran out), p50 / max | {} / {} | | |",
        secs(quantile(&freed, 0.5)),
        secs(freed.last().copied().unwrap_or_default())
    );
    let _ = writeln!(
        s,
        "| rollouts succeeded | {} of {} | all | {} |",
        r.rollouts_succeeded,
        st.kills + 1,
        verdict(r.rollouts_succeeded == st.kills + 1)
    );
    let _ = writeln!(
        s,
        "| instances launched / terminated | {} / {} | {} / {} (one each per replaced instance) | {} |",
        r.launched,
        r.terminated,
        r.expected_launched,
        r.expected_terminated,
        verdict(r.launched == r.expected_launched && r.terminated == r.expected_terminated)
    );
    let _ = writeln!(
        s,
        "\nTakeovers (ms, in kill order; the rollout state at the kill): {}\n",
        r.kills
            .iter()
            .map(|k| format!("{:.0} ({})", k.takeover.as_secs_f64() * 1000.0, k.state))
            .collect::<Vec<_>>()
            .join(", ")
    );
    provenance(&mut s, command);
    let _ = writeln!(
        s,
        "- Method: {} instances, batch {}, app boot delay {}, min_healthy_time {}; two real `rollgate coordinator` \
         replicas with the default `lock_ttl`, `leader_check_ttl` and `lock_delay` (config/rollgate.toml), \
         the fleet simulator, moto and the sandbox Consul (ACLs on, Consul's timings). {} rollouts after a warm-up one \
         ({:.1} s); in each, at a random moment within 80 % of the warm-up's duration, the replica named in the lock \
         key is sent SIGKILL. Times are taken from outside, by blocking queries on `rollgate/leader`: lock freed when \
         the key loses the dead session, takeover when it names the other replica's session (its first acquisition, \
         after which its writes are fenced with that session). The killed replica is started again after the \
         takeover, as the standby. Launched/terminated are the fleet simulator's node starts and stops over the \
         whole run: an instance terminated twice, or a wrong one, shows as a missing or extra instance.",
        st.instances,
        st.batch,
        humantime::format_duration(st.boot_delay),
        humantime::format_duration(st.min_healthy),
        st.kills,
        r.warmup.as_secs_f64()
    );
    s
}

/// Replaces (or appends) the section `name` of the Markdown file at `path`.
pub fn write_section(path: &Path, name: &str, body: &str) -> std::io::Result<()> {
    let start = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let existing = std::fs::read_to_string(path).unwrap_or_else(|_| {
        "# Benchmarks\n\nEvery figure here is written by `sandbox bench` (see each section's command). \
         Timing is measured here, never asserted in tests.\n"
            .to_string()
    });
    let block = format!("{start}\n{body}{end}\n");
    let updated = match (existing.find(&start), existing.find(&end)) {
        (Some(a), Some(b)) if b > a => {
            format!(
                "{}{}{}",
                &existing[..a],
                block,
                existing[b + end.len()..].trim_start_matches('\n')
            )
        }
        _ => format!(
            "{}\n{}",
            existing.trim_end_matches('\n').to_string() + "\n",
            block
        ),
    };
    std::fs::write(path, updated)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sections_are_replaced_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("B.md");
        write_section(&p, "a", "one\n").unwrap();
        write_section(&p, "b", "two\n").unwrap();
        write_section(&p, "a", "three\n").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("three") && text.contains("two") && !text.contains("one"));
        assert!(
            text.find("bench:a").unwrap() < text.find("bench:b").unwrap(),
            "order kept"
        );
    }

    #[test]
    fn quantiles_and_dates() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(today().len(), 10);
    }
}

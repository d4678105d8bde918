//! The demo's summary: what happened, the expectations checked against it,
//! the table printed at the end, and the same as JSON (`--summary-json`) for
//! the end-to-end test and anyone scripting the demo.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

/// Everything the demo reports at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Every expectation held.
    pub ok: bool,
    /// The expectations that did not hold, in words.
    pub problems: Vec<String>,
    /// The seed every random choice came from.
    pub seed: u64,
    /// Instances in the group.
    pub instances: usize,
    /// Instances replaced per batch.
    pub batch: u32,
    /// The rollouts, in order.
    pub rollouts: Vec<RolloutSummary>,
    /// The load generator's counters.
    pub requests: RequestSummary,
    /// Alerts received by the Slack stand-in and the SMTP server.
    pub alerts: AlertSummary,
    /// Where every instance ended up.
    pub fleet: FleetSummary,
    /// The timeline chart, when it was written.
    pub chart: Option<PathBuf>,
    /// The working directory (configuration, logs of the coordinators and
    /// of every instance).
    pub work_dir: PathBuf,
    /// Seconds from the start to the summary.
    pub seconds: f64,
}

/// One rollout.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutSummary {
    /// The plan (`web-1`).
    pub plan: String,
    /// The version rolled out.
    pub version: String,
    /// What the story expects: `succeeded` or `reverted`.
    pub expected: String,
    /// What happened: the plan's outcome, `error` when the demo could not
    /// follow it, `not run` after an earlier error.
    pub outcome: String,
    /// The outcome's reason (a revert's cause), or the error.
    pub reason: String,
    /// Seconds from publish to the outcome.
    pub seconds: f64,
    /// The story kills the leading coordinator during this rollout.
    pub kills_leader: bool,
    /// The replica that led when the rollout was approved.
    pub leader_at_start: Option<String>,
    /// The replica killed mid-rollout.
    pub leader_killed: Option<String>,
    /// The replica that led when the rollout ended.
    pub leader_at_end: Option<String>,
}

impl RolloutSummary {
    /// Whether the story went as expected; the reason when not.
    pub fn problem(&self) -> Option<String> {
        if self.outcome != self.expected {
            let why = if self.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", self.reason)
            };
            return Some(format!(
                "{} ({}) ended {} (expected {}){why}",
                self.plan, self.version, self.outcome, self.expected
            ));
        }
        if self.kills_leader {
            match (&self.leader_killed, &self.leader_at_end) {
                (None, _) => {
                    return Some(format!("{}: no leading coordinator was killed", self.plan));
                }
                (Some(killed), end) if end.as_ref() == Some(killed) || end.is_none() => {
                    return Some(format!(
                        "{}: no other replica took over from {killed}",
                        self.plan
                    ));
                }
                _ => {}
            }
        }
        None
    }
}

/// The load generator's counters.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RequestSummary {
    /// Requests sent.
    pub sent: u64,
    /// Of those, succeeded.
    pub ok: u64,
    /// Of those, failed.
    pub failed: u64,
    /// Fewest instances passing in Consul at any moment.
    pub min_passing: usize,
}

/// Alerts received.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct AlertSummary {
    /// Messages the Slack stand-in received.
    pub slack: usize,
    /// Emails the SMTP server received.
    pub email: usize,
    /// The revert alert arrived on Slack.
    pub revert_on_slack: bool,
    /// The revert alert arrived by email.
    pub revert_on_email: bool,
}

/// Where every instance ended up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetSummary {
    /// Instances the group should have.
    pub expected: usize,
    /// The version every instance should run at the end.
    pub final_version: String,
    /// Instances InService in the Auto Scaling group at the end.
    pub in_group: usize,
    /// Simulated instances running at the end.
    pub running: usize,
    /// Of those, on the final version.
    pub on_final_version: usize,
    /// Instances passing in Consul at the end.
    pub passing: usize,
    /// Instances the simulator started over the whole demo.
    pub started: u64,
    /// Instances it stopped (drained) over the whole demo.
    pub stopped: u64,
    /// The group's members and the running simulated instances are the same
    /// set.
    pub group_matches_fleet: bool,
}

impl FleetSummary {
    /// What does not add up.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let n = self.expected;
        if self.in_group != n || self.running != n || self.passing != n {
            problems.push(format!(
                "expected {n} instances at the end; the group has {} in service, {} run, {} pass in Consul",
                self.in_group, self.running, self.passing
            ));
        }
        if self.on_final_version != self.running {
            problems.push(format!(
                "{} of {} running instances are not on {}",
                self.running - self.on_final_version.min(self.running),
                self.running,
                self.final_version
            ));
        }
        if !self.group_matches_fleet {
            problems.push("the group's instances and the running instances differ".into());
        }
        if self.started != self.stopped + self.running as u64 {
            problems.push(format!(
                "instances unaccounted for: {} started, {} stopped, {} running",
                self.started, self.stopped, self.running
            ));
        }
        problems
    }
}

impl Summary {
    /// Fills `problems` and `ok` from the facts.
    pub fn check(&mut self) {
        let mut problems: Vec<String> = self
            .rollouts
            .iter()
            .filter_map(RolloutSummary::problem)
            .collect();
        if self.requests.failed > 0 {
            problems.push(format!(
                "{} of {} requests failed",
                self.requests.failed, self.requests.sent
            ));
        }
        if self.requests.sent == 0 {
            problems.push("the load generator sent no request".into());
        }
        let reverts = self.rollouts.iter().any(|r| r.expected == "reverted");
        if reverts && !(self.alerts.revert_on_slack && self.alerts.revert_on_email) {
            problems.push(format!(
                "the revert alert did not arrive on both channels (Slack: {}, email: {})",
                yes_no(self.alerts.revert_on_slack),
                yes_no(self.alerts.revert_on_email)
            ));
        }
        problems.extend(self.fleet.problems());
        self.ok = problems.is_empty();
        self.problems = problems;
    }

    /// The table and lines printed at the end.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "  {:<7} {:<7} {:<10} {:<10} {:>8}  LEADER",
            "PLAN", "VERSION", "EXPECTED", "OUTCOME", "DURATION"
        );
        for r in &self.rollouts {
            let leader = match (&r.leader_killed, &r.leader_at_end) {
                (Some(killed), Some(end)) => format!("{killed} killed, {end} finished"),
                (Some(killed), None) => format!("{killed} killed, nobody took over"),
                (None, Some(end)) => end.clone(),
                (None, None) => "-".into(),
            };
            let _ = writeln!(
                out,
                "  {:<7} {:<7} {:<10} {:<10} {:>7.0}s  {leader}",
                r.plan, r.version, r.expected, r.outcome, r.seconds
            );
        }
        let q = &self.requests;
        let _ = writeln!(
            out,
            "  requests: {} sent, {} served, {} failed; fewest instances passing: {}",
            q.sent, q.ok, q.failed, q.min_passing
        );
        let a = &self.alerts;
        let _ = writeln!(
            out,
            "  alerts delivered: {} on Slack, {} by email (the revert alert on Slack: {}, by email: {})",
            a.slack,
            a.email,
            yes_no(a.revert_on_slack),
            yes_no(a.revert_on_email)
        );
        let f = &self.fleet;
        let _ = writeln!(
            out,
            "  instances: {} in the group, {} running ({} on {}), {} passing; {} started and {} stopped over the demo",
            f.in_group,
            f.running,
            f.on_final_version,
            f.final_version,
            f.passing,
            f.started,
            f.stopped
        );
        let _ = writeln!(
            out,
            "  total time: {:.0}s; seed {}",
            self.seconds, self.seed
        );
        out
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(expected: &str, outcome: &str) -> RolloutSummary {
        RolloutSummary {
            plan: "web-1".into(),
            version: "1.1.0".into(),
            expected: expected.into(),
            outcome: outcome.into(),
            reason: String::new(),
            seconds: 10.0,
            kills_leader: false,
            leader_at_start: Some("demo-a".into()),
            leader_killed: None,
            leader_at_end: Some("demo-a".into()),
        }
    }

    fn good() -> Summary {
        let mut takeover = rollout("succeeded", "succeeded");
        takeover.kills_leader = true;
        takeover.leader_killed = Some("demo-a".into());
        takeover.leader_at_end = Some("demo-b".into());
        Summary {
            ok: false,
            problems: Vec::new(),
            seed: 1,
            instances: 4,
            batch: 2,
            rollouts: vec![
                rollout("succeeded", "succeeded"),
                rollout("reverted", "reverted"),
                takeover,
            ],
            requests: RequestSummary {
                sent: 100,
                ok: 100,
                failed: 0,
                min_passing: 4,
            },
            alerts: AlertSummary {
                slack: 5,
                email: 5,
                revert_on_slack: true,
                revert_on_email: true,
            },
            fleet: FleetSummary {
                expected: 4,
                final_version: "1.3.0".into(),
                in_group: 4,
                running: 4,
                on_final_version: 4,
                passing: 4,
                started: 14,
                stopped: 10,
                group_matches_fleet: true,
            },
            chart: None,
            work_dir: PathBuf::from("/tmp/demo"),
            seconds: 100.0,
        }
    }

    #[test]
    fn a_good_run_holds_every_expectation() {
        let mut s = good();
        s.check();
        assert!(s.ok, "{:?}", s.problems);
        let text = s.render();
        assert!(text.contains("demo-a killed, demo-b finished"), "{text}");
    }

    #[test]
    fn each_broken_expectation_is_named() {
        let mut s = good();
        s.requests.failed = 2;
        s.alerts.revert_on_email = false;
        s.rollouts[1].outcome = "succeeded".into();
        s.rollouts[2].leader_at_end = Some("demo-a".into());
        s.fleet.stopped = 9;
        s.check();
        assert!(!s.ok);
        let all = s.problems.join("\n");
        for part in [
            "2 of 100 requests failed",
            "email: NO",
            "ended succeeded (expected reverted)",
            "no other replica took over",
            "unaccounted for",
        ] {
            assert!(all.contains(part), "{part:?} missing from {all}");
        }
    }
}

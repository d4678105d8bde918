//! What the demo shows on stdout while it runs.
//!
//! On a terminal, each rollout gets a live view (indicatif): a header with
//! the phase, the batch and the leader, bars for the instances on the old
//! image, on the new image and passing in Consul, and the load generator's
//! counters. The one-line-per-step log is printed above the bars, so it stays
//! on screen when they go. Anywhere else (CI, a pipe, a test) there are no
//! bars and no escape codes: only the log lines, so the output stays
//! readable as a file.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One moment of a rollout, as the view shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Frame {
    /// The plan (`web-1`) and the version it rolls out.
    pub title: String,
    /// The rollout's state (`launching`, `retiring`, ...).
    pub phase: String,
    /// The batch in progress (or done last), 1-based; 0 before the first.
    pub batch: u32,
    /// Batches in the rollout.
    pub batches: u32,
    /// Instances on an image other than the one rolled out.
    pub old: u64,
    /// Instances on the image rolled out.
    pub new: u64,
    /// Instances passing in Consul.
    pub passing: u64,
    /// The coordinator replica holding the leader lock.
    pub leader: String,
    /// Requests that succeeded so far.
    pub served: u64,
    /// Requests that failed so far.
    pub failed: u64,
    /// Seconds since the rollout was approved.
    pub seconds: u64,
}

/// Bars of one rollout.
#[derive(Debug)]
struct Bars {
    multi: MultiProgress,
    header: ProgressBar,
    old: ProgressBar,
    new: ProgressBar,
    passing: ProgressBar,
    load: ProgressBar,
}

/// The demo's output: plain lines, plus bars on a terminal.
#[derive(Debug)]
pub(super) struct View {
    /// Whether stdout is a terminal that can show bars.
    live: bool,
    /// The bars of the rollout in progress.
    bars: Option<Bars>,
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants of this file: a bad one is a bug caught by
    // the unit test, and falls back to the default style rather than panic.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("█▉▊▋▌▍▎▏ ")
}

fn bar(multi: &MultiProgress, label: &str, color: &str, len: u64) -> ProgressBar {
    let template = format!("  {{prefix:<18}} [{{bar:32.{color}/white}}] {{pos:>2}}/{{len}}");
    let bar = multi.add(ProgressBar::new(len).with_style(style(&template)));
    bar.set_prefix(label.to_owned());
    bar
}

impl View {
    /// A view with bars when `live`.
    pub fn new(live: bool) -> Self {
        Self { live, bars: None }
    }

    /// Whether stdout is a terminal (and `TERM` is not `dumb`), where bars
    /// can be drawn.
    pub fn stdout_is_terminal() -> bool {
        std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::env::var("TERM").map_or(true, |t| t != "dumb")
    }

    /// Prints a line of the log (above the bars while they are shown).
    pub fn line(&self, text: impl AsRef<str>) {
        match &self.bars {
            Some(bars) => {
                if bars.multi.println(text.as_ref()).is_err() {
                    println!("{}", text.as_ref());
                }
            }
            None => println!("{}", text.as_ref()),
        }
    }

    /// Shows the bars of a rollout of `instances`, surging by `batch`.
    pub fn start(&mut self, instances: u64, batch: u64) {
        if !self.live {
            return;
        }
        self.finish();
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let header = multi.add(ProgressBar::new_spinner().with_style(style("  {spinner} {msg}")));
        header.enable_steady_tick(Duration::from_millis(120));
        let old = bar(&multi, "old image", "blue", instances);
        let new = bar(&multi, "new image", "green", instances);
        let passing = bar(&multi, "passing in Consul", "cyan", instances + batch);
        let load = multi.add(ProgressBar::new_spinner().with_style(style("  {msg}")));
        self.bars = Some(Bars {
            multi,
            header,
            old,
            new,
            passing,
            load,
        });
    }

    /// Updates the bars (nothing without them).
    pub fn show(&self, frame: &Frame) {
        let Some(bars) = &self.bars else {
            return;
        };
        bars.header.set_message(format!(
            "{}  |  {}  |  batch {}/{}  |  leader {}  |  {}s",
            frame.title,
            frame.phase,
            frame.batch,
            frame.batches,
            if frame.leader.is_empty() {
                "(none)"
            } else {
                &frame.leader
            },
            frame.seconds
        ));
        bars.old.set_position(frame.old);
        bars.new.set_position(frame.new);
        bars.passing.set_position(frame.passing);
        bars.load.set_message(format!(
            "{:<18}   {} served, {} failed",
            "requests", frame.served, frame.failed
        ));
    }

    /// Takes the bars away (the log lines stay).
    pub fn finish(&mut self) {
        if let Some(bars) = self.bars.take() {
            for bar in [
                &bars.header,
                &bars.old,
                &bars.new,
                &bars.passing,
                &bars.load,
            ] {
                bar.finish_and_clear();
            }
            let _ = bars.multi.clear();
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The line logged for a frame, when the rollout's step changed.
pub(super) fn step_line(frame: &Frame) -> String {
    format!(
        "    {:<12} batch {}/{} | old {} new {} passing {} | leader {} | requests {} ok, {} failed",
        frame.phase,
        frame.batch,
        frame.batches,
        frame.old,
        frame.new,
        frame.passing,
        if frame.leader.is_empty() {
            "(none)"
        } else {
            &frame.leader
        },
        frame.served,
        frame.failed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_valid() {
        for template in [
            "  {spinner} {msg}",
            "  {msg}",
            "  {prefix:<18} [{bar:32.blue/white}] {pos:>2}/{len}",
        ] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    #[test]
    fn without_a_terminal_there_are_no_bars() {
        let mut view = View::new(false);
        view.start(6, 2);
        assert!(view.bars.is_none());
        view.show(&Frame::default());
        view.finish();
    }

    #[test]
    fn a_step_line_has_every_counter() {
        let line = step_line(&Frame {
            title: "web-1 1.1.0".into(),
            phase: "launching".into(),
            batch: 1,
            batches: 3,
            old: 6,
            new: 2,
            passing: 7,
            leader: "demo-a".into(),
            served: 120,
            failed: 0,
            seconds: 4,
        });
        assert_eq!(
            line,
            "    launching    batch 1/3 | old 6 new 2 passing 7 | leader demo-a | requests 120 ok, 0 failed"
        );
    }
}

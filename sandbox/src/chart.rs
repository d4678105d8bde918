//! The demo's timeline chart: instances on the old and the new image, the
//! instances Consul reports passing, and the load generator's requests per
//! second, over time, with each rollout shown as a shaded span and the
//! moments that matter (a leader killed, a replica taking over) as labelled
//! vertical lines. Written as SVG, so it can be embedded in the README and
//! opened in any browser.
//!
//! It only draws what it is given ([`Timeline`]); the demo records the data.
//!
//! # What it must never do
//!
//! - Need a font or a native library: plotters is built with its SVG backend
//!   only, text is left to the viewer.
//! - Panic on odd data: an empty timeline or a span that ends before it
//!   starts still draws (a one-second chart, a zero-width span).

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

/// Size of the picture, in pixels.
pub const SIZE: (u32, u32) = (1100, 560);

/// Why the chart could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// plotters refused to draw (a bad range, a backend error).
    #[error("cannot draw the timeline chart: {0}")]
    Draw(String),
    /// The SVG could not be written.
    #[error("cannot write the timeline chart to {path}: {source}")]
    Write {
        /// Where it was to go.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Everything the chart shows. Times are seconds from the same origin.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    /// The caption.
    pub title: String,
    /// The fleet, sampled.
    pub fleet: Vec<FleetPoint>,
    /// The load generator's requests, one point per bucket.
    pub requests: Vec<RequestPoint>,
    /// The rollouts.
    pub spans: Vec<Span>,
    /// Single moments (a leader killed, a takeover).
    pub marks: Vec<Mark>,
}

/// The fleet at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FleetPoint {
    /// Milliseconds from the origin (integer, so the point can be compared).
    pub at_ms: u64,
    /// Instances in the group, booted or booting, on an image other than the
    /// one being rolled out.
    pub old: usize,
    /// Instances in the group on the image being rolled out.
    pub new: usize,
    /// Instances of the service Consul reports passing.
    pub passing: usize,
}

/// Requests sent in one bucket of the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RequestPoint {
    /// Start of the bucket, milliseconds from the origin.
    pub at_ms: u64,
    /// Width of the bucket, milliseconds (to turn counts into rates).
    pub width_ms: u64,
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
}

/// A stretch of time with a label: one rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Start, milliseconds from the origin.
    pub start_ms: u64,
    /// End, milliseconds from the origin.
    pub end_ms: u64,
    /// What happened (`1.1.0 succeeded`).
    pub label: String,
    /// Whether it went as a good rollout should (green) or not (red).
    pub good: bool,
}

/// A labelled moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mark {
    /// When, milliseconds from the origin.
    pub at_ms: u64,
    /// What happened.
    pub label: String,
}

const OLD: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const NEW: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const PASSING: RGBColor = RGBColor(0x55, 0x55, 0x55);
const FAILED: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const SERVED: RGBColor = RGBColor(0xff, 0xb0, 0x60);
const MARK: RGBColor = RGBColor(0x94, 0x67, 0xbd);

/// Height of the legend strip under the chart, in pixels.
const LEGEND_HEIGHT: u32 = 28;

/// Points of one line, (seconds, value).
type Points = Vec<(f64, f64)>;

/// One line of the fleet: its legend, colour, width and what it counts.
type FleetSeries = (&'static str, RGBColor, u32, fn(&FleetPoint) -> usize);

fn secs(ms: u64) -> f64 {
    // Demo timelines are minutes long; the cast loses nothing that shows.
    ms as f64 / 1000.0
}

fn draw_err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Points of a step line through `points`: each value holds until the next
/// sample, as a count of instances does.
fn steps(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, &(x, y)) in points.iter().enumerate() {
        if i > 0 {
            out.push((x, points[i - 1].1));
        }
        out.push((x, y));
    }
    out
}

impl Timeline {
    /// The end of the time axis, in seconds (at least one).
    fn x_end(&self) -> f64 {
        let fleet = self.fleet.iter().map(|p| p.at_ms);
        let requests = self.requests.iter().map(|r| r.at_ms + r.width_ms);
        let spans = self.spans.iter().map(|s| s.end_ms.max(s.start_ms));
        let marks = self.marks.iter().map(|m| m.at_ms);
        let end = fleet.chain(requests).chain(spans).chain(marks).max();
        secs(end.unwrap_or(0)).max(1.0)
    }

    /// Requests per second, served and failed, at the start of each bucket.
    fn rates(&self) -> (Points, Points) {
        let mut served = Vec::new();
        let mut failed = Vec::new();
        for r in &self.requests {
            let width = secs(r.width_ms.max(1));
            served.push((secs(r.at_ms), r.ok as f64 / width));
            failed.push((secs(r.at_ms), r.failed as f64 / width));
        }
        (served, failed)
    }

    /// Draws the chart as an SVG document of `size` pixels.
    pub fn render_svg(&self, size: (u32, u32)) -> Result<String, ChartError> {
        let mut svg = String::new();
        self.draw(SVGBackend::with_string(&mut svg, size))?;
        Ok(svg)
    }

    /// Draws the chart ([`SIZE`]) and writes it to `path`.
    pub fn write_svg(&self, path: &Path) -> Result<(), ChartError> {
        let svg = self.render_svg(SIZE)?;
        std::fs::write(path, svg).map_err(|source| ChartError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    fn draw(&self, backend: SVGBackend<'_>) -> Result<(), ChartError> {
        let root = backend.into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        // The legend goes in a strip of its own, where it hides no data.
        let (_, height) = root.dim_in_pixel();
        let (plot, legend) = root.split_vertically(height.saturating_sub(LEGEND_HEIGHT));
        let x_end = self.x_end();
        let most = self
            .fleet
            .iter()
            .map(|p| p.old.max(p.new).max(p.passing))
            .max()
            .unwrap_or(0);
        // Headroom above the highest count for the rollout labels.
        let y_end = most as f64 + 2.5;
        let (served, failed) = self.rates();
        let rate_end = served
            .iter()
            .chain(&failed)
            .map(|&(_, r)| r)
            .fold(1.0_f64, f64::max)
            * 1.25;

        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0.0..x_end, 0.0..y_end)
            .map_err(draw_err)?
            .set_secondary_coord(0.0..x_end, 0.0..rate_end);
        chart
            .configure_mesh()
            .max_light_lines(0)
            .x_desc("seconds since the load generator started")
            .y_desc("instances")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(draw_err)?;
        chart
            .configure_secondary_axes()
            .y_desc("requests per second")
            .y_label_formatter(&|r| format!("{r:.0}"))
            .label_style(("sans-serif", 12).into_font().color(&PASSING))
            .draw()
            .map_err(draw_err)?;

        for span in &self.spans {
            let (start, end) = (secs(span.start_ms), secs(span.end_ms.max(span.start_ms)));
            let color = if span.good { NEW } else { FAILED };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(start, 0.0), (end, y_end)],
                    color.mix(0.10).filled(),
                )))
                .map_err(draw_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    span.label.clone(),
                    (start + x_end * 0.004, y_end - 0.15),
                    ("sans-serif", 13).into_font().color(&color),
                )))
                .map_err(draw_err)?;
        }
        for (n, mark) in self.marks.iter().enumerate() {
            let at = secs(mark.at_ms);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(at, 0.0), (at, y_end - 0.6)],
                    MARK.stroke_width(2),
                )))
                .map_err(draw_err)?;
            // Alternate heights so two close marks do not overwrite each other.
            let y = y_end - 0.75 - (n % 2) as f64 * 0.45;
            chart
                .draw_series(std::iter::once(Text::new(
                    mark.label.clone(),
                    (at + x_end * 0.004, y),
                    ("sans-serif", 12).into_font().color(&MARK),
                )))
                .map_err(draw_err)?;
        }

        chart
            .draw_secondary_series(LineSeries::new(served, SERVED.stroke_width(2)))
            .map_err(draw_err)?;
        chart
            .draw_secondary_series(LineSeries::new(failed, FAILED.stroke_width(2)))
            .map_err(draw_err)?;
        let mut entries = vec![
            ("served requests/s (right axis)", SERVED.stroke_width(2)),
            ("failed requests/s (right axis)", FAILED.stroke_width(2)),
        ];

        let series: [FleetSeries; 3] = [
            ("passing in Consul", PASSING, 5, |p| p.passing),
            ("old image", OLD, 2, |p| p.old),
            ("new image", NEW, 2, |p| p.new),
        ];
        for (label, color, width, value) in series {
            let points: Points = self
                .fleet
                .iter()
                .map(|p| (secs(p.at_ms), value(p) as f64))
                .collect();
            let style = if width > 2 {
                color.mix(0.35).stroke_width(width)
            } else {
                color.stroke_width(width)
            };
            chart
                .draw_series(LineSeries::new(steps(&points), style))
                .map_err(draw_err)?;
            entries.push((label, style));
        }

        // One row: a stroke sample, then its label; text widths are
        // estimated (no font is loaded), generously.
        let mut x = 70i32;
        let y = i32::try_from(LEGEND_HEIGHT / 2).unwrap_or(14);
        for (label, style) in entries {
            legend
                .draw(&PathElement::new(vec![(x, y), (x + 24, y)], style))
                .map_err(draw_err)?;
            legend
                .draw(&Text::new(
                    label,
                    (x + 30, y - 7),
                    ("sans-serif", 12).into_font().color(&BLACK),
                ))
                .map_err(draw_err)?;
            x += 30 + i32::try_from(label.len()).unwrap_or(40) * 7 + 24;
        }
        root.present().map_err(draw_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic() -> Timeline {
        let fleet = (0..40u64)
            .map(|i| {
                let new = usize::try_from((i / 8).min(3)).unwrap_or(0) * 2;
                FleetPoint {
                    at_ms: i * 500,
                    old: 6 - new,
                    new,
                    passing: 6,
                }
            })
            .collect();
        let requests = (0..20u64)
            .map(|i| RequestPoint {
                at_ms: i * 1000,
                width_ms: 1000,
                ok: 40,
                failed: u64::from(i == 7),
            })
            .collect();
        Timeline {
            title: "rollgate demo (synthetic)".into(),
            fleet,
            requests,
            spans: vec![
                Span {
                    start_ms: 1_000,
                    end_ms: 9_000,
                    label: "1.1.0 succeeded".into(),
                    good: true,
                },
                Span {
                    start_ms: 10_000,
                    end_ms: 15_000,
                    label: "1.2.0 reverted".into(),
                    good: false,
                },
            ],
            marks: vec![Mark {
                at_ms: 17_000,
                label: "leader demo-a killed".into(),
            }],
        }
    }

    #[test]
    fn renders_every_series_span_and_mark() {
        let svg = synthetic()
            .render_svg((800, 400))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in [
            "rollgate demo (synthetic)",
            "old image",
            "new image",
            "passing in Consul",
            "failed requests/s",
            "served requests/s",
            "1.1.0 succeeded",
            "1.2.0 reverted",
            "leader demo-a killed",
            "instances",
            "requests per second",
        ] {
            assert!(svg.contains(text), "the SVG has no {text:?}");
        }
        // The series are drawn as polylines in their own colours.
        for color in ["#1F77B4", "#2CA02C", "#D62728"] {
            assert!(svg.contains(color), "no stroke in {color}");
        }
    }

    #[test]
    fn an_empty_timeline_still_draws() {
        let svg = Timeline::default()
            .render_svg((400, 200))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(svg.contains("</svg>"));
    }

    #[test]
    fn step_lines_hold_each_value_until_the_next_sample() {
        assert_eq!(
            steps(&[(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)]),
            vec![(0.0, 1.0), (1.0, 1.0), (1.0, 3.0), (2.0, 3.0), (2.0, 2.0)]
        );
    }

    #[test]
    fn writing_to_a_missing_directory_names_the_path() {
        let path = Path::new("/nonexistent-dir-for-the-chart-test/timeline.svg");
        match synthetic().write_svg(path) {
            Err(ChartError::Write { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected a write error, got {other:?}"),
        }
    }
}

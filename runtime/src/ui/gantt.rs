//! A run's attempts drawn on the server as an SVG Gantt chart: one row per
//! attempt (a fan-out one row for all its children, as the graph draws it),
//! its bar from when it began to when it ended, coloured by how it ended,
//! over a time axis from the run's start. The chart has a title and a
//! description; the page lists the same attempts as a table.

use std::fmt::Write as _;

use super::values::escape;
use crate::service::{AttemptBar, Timeline};

const LABEL_W: u32 = 250;
const CHART_W: u32 = 620;
const ROW_H: u32 = 24;
const BAR_H: u32 = 14;
const AXIS_H: u32 = 28;
const PAD: u32 = 8;
/// The longest step name drawn whole in a row's label.
const MAX_LABEL: usize = 30;
/// Rows drawn at most; the table below the chart says how many there are.
pub const MAX_ROWS: usize = 200;

/// A duration as people read it: `850 ms`, `4.2 s`, `3 min 20 s`, `2 h 5 min`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => {
            let s = ms as f64 / 1000.0;
            if s < 10.0 {
                format!("{s:.1} s")
            } else {
                format!("{} s", ms / 1000)
            }
        }
        60_000..=3_599_999 => {
            let (m, s) = (ms / 60_000, (ms % 60_000) / 1000);
            if s == 0 {
                format!("{m} min")
            } else {
                format!("{m} min {s} s")
            }
        }
        _ => {
            let (h, m) = (ms / 3_600_000, (ms % 3_600_000) / 60_000);
            if m == 0 {
                format!("{h} h")
            } else {
                format!("{h} h {m} min")
            }
        }
    }
}

/// A tick step people count in (1, 2, 5 ms … 10 s, 15 s, 30 s, 1 min …
/// 1 h, 2 h, 6 h, 12 h, days) giving at most about six ticks over `span`.
fn tick_step(span: u64) -> u64 {
    const STEPS: [u64; 22] = [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000,
        120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000,
    ];
    const HOURS: [u64; 5] = [2, 3, 6, 12, 24];
    STEPS
        .into_iter()
        .chain(HOURS.into_iter().map(|h| h * 3_600_000))
        .find(|s| span / s <= 6)
        .unwrap_or_else(|| (span / 6 / 86_400_000 + 1) * 86_400_000)
}

/// What a row is called: the step, its attempt, a fan-out's children.
pub fn row_label(b: &AttemptBar) -> String {
    match b.children {
        Some(n) => format!("{} (fan-out, {n} children)", b.step),
        None => format!("{} #{}", b.step, b.attempt),
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_LABEL {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX_LABEL - 1).collect();
        format!("{head}…")
    }
}

/// The chart of `t`; `title` names it for assistive technology.
pub fn svg(t: &Timeline, title: &str) -> String {
    let rows: Vec<&AttemptBar> = t.bars.iter().take(MAX_ROWS).collect();
    let end_of = |b: &AttemptBar| b.end_ms.unwrap_or(t.now_ms);
    let t0 = t.start_ms;
    let t1 = rows
        .iter()
        .map(|b| end_of(b))
        .chain([t.last_ms])
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let span = t1 - t0;
    let x = |at: u64| -> f64 {
        LABEL_W as f64 + (at.saturating_sub(t0) as f64 / span as f64) * CHART_W as f64
    };
    let width = LABEL_W + CHART_W + PAD * 2;
    let height = AXIS_H + rows.len() as u32 * ROW_H + PAD;
    let failed = rows
        .iter()
        .filter(|b| b.outcome != "succeeded" && b.outcome != "running")
        .count();
    let desc = format!(
        "{} attempts over {}, from the run's start; {} did not succeed{}",
        rows.len(),
        duration(span),
        failed,
        if t.bars.len() > rows.len() {
            format!("; the first {} of {} are drawn", rows.len(), t.bars.len())
        } else {
            String::new()
        }
    );
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"gantt\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-labelledby=\"gantt-title gantt-desc\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\"><title id=\"gantt-title\">{}</title><desc id=\"gantt-desc\">{}</desc>",
        escape(title),
        escape(&desc),
    );
    // The axis: a tick and a label per step, and a line down the chart.
    let step = tick_step(span);
    let mut tick = 0;
    while tick <= span {
        let tx = x(t0 + tick);
        let _ = write!(
            out,
            "<line class=\"tick\" x1=\"{tx:.1}\" y1=\"{y1}\" x2=\"{tx:.1}\" y2=\"{y2}\"/><text class=\"axis\" x=\"{tx:.1}\" y=\"{ty}\" text-anchor=\"middle\">+{}</text>",
            duration(tick),
            y1 = AXIS_H - 6,
            y2 = height - PAD,
            ty = AXIS_H - 10,
        );
        tick += step;
    }
    for (i, b) in rows.iter().enumerate() {
        let y = AXIS_H + i as u32 * ROW_H;
        let (bx, bw) = {
            let a = x(b.start_ms);
            let e = x(end_of(b));
            (a, (e - a).max(2.0))
        };
        let label = row_label(b);
        let ended = match b.end_ms {
            Some(e) => format!("ended after {}", duration(e.saturating_sub(b.start_ms))),
            None => format!(
                "out for {} so far",
                duration(t.now_ms.saturating_sub(b.start_ms))
            ),
        };
        let tip = format!(
            "{label}: {}, began +{}, {ended}{}",
            b.outcome.replace('_', " "),
            duration(b.start_ms.saturating_sub(t0)),
            b.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
        );
        let _ = write!(
            out,
            "<g class=\"bar st-{st}\"><title>{tip}</title><text class=\"label\" x=\"{lx}\" y=\"{ly}\">{text}</text><rect x=\"{bx:.1}\" y=\"{ry}\" width=\"{bw:.1}\" height=\"{BAR_H}\" rx=\"3\"/></g>",
            st = b.outcome,
            tip = escape(&tip),
            lx = PAD,
            ly = y + BAR_H,
            text = escape(&cut(&label)),
            ry = y + (ROW_H - BAR_H) / 2 - 2,
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(
        step: &str,
        attempt: u32,
        start: u64,
        end: Option<u64>,
        outcome: &'static str,
    ) -> AttemptBar {
        AttemptBar {
            step: step.into(),
            attempt,
            children: None,
            start_ms: start,
            end_ms: end,
            outcome,
            error: None,
        }
    }

    #[test]
    fn one_bar_per_attempt_coloured_by_outcome_on_a_time_axis() {
        let t = Timeline {
            start_ms: 1_000,
            last_ms: 5_000,
            now_ms: 9_000,
            bars: vec![
                bar("train", 1, 1_000, Some(2_000), "failed"),
                bar("train", 2, 3_000, Some(5_000), "succeeded"),
                bar("<eval>", 1, 5_000, None, "running"),
            ],
            complete: true,
        };
        let s = svg(&t, "attempts of run r-1");
        assert_eq!(s.matches("<rect").count(), 3, "{s}");
        assert!(s.contains("class=\"bar st-failed\"") && s.contains("class=\"bar st-running\""));
        assert!(s.contains("<title id=\"gantt-title\">attempts of run r-1</title>"));
        assert!(s.contains("3 attempts over 8.0 s"), "{s}");
        assert!(
            s.contains("&lt;eval&gt; #1") && !s.contains("<eval>"),
            "{s}"
        );
        // The running attempt reaches the right edge (now).
        assert!(
            s.contains(&format!("width=\"{:.1}\"", 620.0 * 4.0 / 8.0)),
            "{s}"
        );
        assert!(s.contains(">+0 ms<") && s.contains(">+2.0 s<"), "{s}");
    }

    #[test]
    fn durations_and_ticks_read_as_people_write_them() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(4_200), "4.2 s");
        assert_eq!(duration(200_000), "3 min 20 s");
        assert_eq!(duration(7_500_000), "2 h 5 min");
        assert_eq!(tick_step(8_000), 2_000);
        assert_eq!(tick_step(1), 1);
        assert_eq!(tick_step(3_600_000), 600_000);
        assert_eq!(tick_step(40 * 86_400_000), 7 * 86_400_000);
    }
}

//! The latency chart: p50 / p99 / max per scenario as grouped bars on a logarithmic
//! millisecond axis, written as a small self-contained SVG (no plotting dependency).

use std::fmt::Write as _;

use super::report::{LatencySeries, number};

const GROUP_WIDTH: f64 = 150.0;
const BAR_WIDTH: f64 = 32.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 50.0;
const PLOT_HEIGHT: f64 = 260.0;
const BOTTOM: f64 = 70.0;
const COLORS: [(&str, &str); 3] = [("p50", "#8ecae6"), ("p99", "#219ebc"), ("max", "#023047")];

/// An SVG bar chart of the series' latency percentiles; `title` goes on top.
pub fn latency_svg(title: &str, series: &[LatencySeries]) -> String {
    let width = LEFT + 20.0 + GROUP_WIDTH * series.len().max(1) as f64;
    let height = TOP + PLOT_HEIGHT + BOTTOM;
    let values = series.iter().flat_map(|s| [s.p50_ms, s.p99_ms, s.max_ms]);
    let (low, high) = decades(values);
    let y = |ms: f64| {
        let clamped = ms.max(10f64.powi(low));
        TOP + PLOT_HEIGHT - PLOT_HEIGHT * (clamped.log10() - f64::from(low)) / f64::from(high - low)
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width}" height="{height}" fill="white"/><text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    // Legend.
    for (i, (name, color)) in COLORS.iter().enumerate() {
        let x = LEFT + i as f64 * 70.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="30" width="12" height="12" fill="{color}"/><text x="{}" y="40">{name}</text>"#,
            x + 16.0
        );
    }
    // Axis with one gridline per decade.
    for decade in low..=high {
        let ms = 10f64.powi(decade);
        let gy = y(ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            width - 10.0,
            LEFT - 6.0,
            gy + 4.0,
            axis_label(ms)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#333"/>"##,
        TOP + PLOT_HEIGHT
    );
    for (g, s) in series.iter().enumerate() {
        let x0 = LEFT + 20.0 + g as f64 * GROUP_WIDTH;
        for (i, (value, (_, color))) in [s.p50_ms, s.p99_ms, s.max_ms]
            .into_iter()
            .zip(COLORS)
            .enumerate()
        {
            let x = x0 + i as f64 * (BAR_WIDTH + 4.0);
            let top = y(value);
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{BAR_WIDTH}" height="{:.1}" fill="{color}"><title>{}: {} ms</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                (TOP + PLOT_HEIGHT - top).max(0.5),
                escape(&s.label),
                number(value),
                x + BAR_WIDTH / 2.0,
                top - 3.0,
                number(value)
            );
        }
        let center = x0 + 1.5 * BAR_WIDTH + 4.0;
        for (line, text) in wrap(&s.label, 22).iter().enumerate() {
            let _ = writeln!(
                svg,
                r#"<text x="{center:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + PLOT_HEIGHT + 18.0 + 14.0 * line as f64,
                escape(text)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// The decades (powers of ten, in ms) that hold every value; at least one decade apart.
fn decades(values: impl Iterator<Item = f64>) -> (i32, i32) {
    let (mut min, mut max) = (f64::MAX, f64::MIN);
    for v in values.filter(|v| *v > 0.0) {
        min = min.min(v);
        max = max.max(v);
    }
    if min > max {
        return (-1, 3);
    }
    let low = min.log10().floor() as i32;
    let high = (max.log10().ceil() as i32).max(low + 1);
    (low, high)
}

fn axis_label(ms: f64) -> String {
    if ms >= 1000.0 {
        number(ms)
    } else if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms}")
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_group_per_series() {
        let series = vec![
            LatencySeries {
                label: "latency at half load".into(),
                samples: 10,
                p50_ms: 2.0,
                p99_ms: 9.5,
                max_ms: 40.0,
            },
            LatencySeries {
                label: "fairness <B>".into(),
                samples: 10,
                p50_ms: 0.4,
                p99_ms: 3.0,
                max_ms: 2100.0,
            },
        ];
        let svg = latency_svg("jetpost latency", &series);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<rect x=").count(), 3 + 6);
        assert!(svg.contains("fairness &lt;B&gt;"));
        assert_eq!(decades([0.4, 2100.0].into_iter()), (-1, 4));
    }
}

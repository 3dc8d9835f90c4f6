//! The benchmark's results: one row per measured metric (value, the baseline or limit it is
//! compared with, the target and its verdict), the machine it ran on, and the latency
//! percentiles the chart draws. Rendered as a markdown table and as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::tally::Latencies;

/// One measured metric.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    /// `None` when it could not be measured (see `note`).
    pub value: Option<f64>,
    pub unit: String,
    /// What the value is compared with: a limit measured in the same run, or a baseline run.
    pub baseline: Option<Baseline>,
    /// `value` as a percentage of the baseline.
    pub percent_of_baseline: Option<f64>,
    /// The target, in words (`≥ 50 % of the lower limit`).
    pub target: Option<String>,
    /// Whether the target is met; `None` without a target or a value.
    pub pass: Option<bool>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub label: String,
    pub value: f64,
    pub unit: String,
}

impl Row {
    pub fn new(scenario: &str, metric: impl Into<String>, value: Option<f64>, unit: &str) -> Row {
        Row {
            scenario: scenario.to_owned(),
            metric: metric.into(),
            value,
            unit: unit.to_owned(),
            baseline: None,
            percent_of_baseline: None,
            target: None,
            pass: None,
            note: None,
        }
    }

    /// Compares with `baseline` (a limit or a reference run) and fills in the percentage.
    pub fn against(mut self, label: impl Into<String>, value: Option<f64>, unit: &str) -> Row {
        if let Some(baseline) = value {
            self.percent_of_baseline = self
                .value
                .filter(|_| baseline > 0.0)
                .map(|v| 100.0 * v / baseline);
            self.baseline = Some(Baseline {
                label: label.into(),
                value: baseline,
                unit: unit.to_owned(),
            });
        }
        self
    }

    /// Sets the target and its verdict, computed from this row by `check`.
    pub fn target(
        mut self,
        target: impl Into<String>,
        check: impl FnOnce(&Row) -> Option<bool>,
    ) -> Row {
        self.target = Some(target.into());
        self.pass = check(&self);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        let note = note.into();
        self.note = Some(match self.note.take() {
            Some(old) => format!("{old}; {note}"),
            None => note,
        });
        self
    }
}

/// Latency percentiles of one scenario, for the table's neighbours and the chart.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySeries {
    pub label: String,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySeries {
    pub fn from(label: impl Into<String>, latencies: &Latencies) -> Option<LatencySeries> {
        Some(LatencySeries {
            label: label.into(),
            samples: latencies.count(),
            p50_ms: latencies.percentile_ms(50.0)?,
            p99_ms: latencies.percentile_ms(99.0)?,
            max_ms: latencies.max_ms()?,
        })
    }
}

/// The machine a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub nats_server: String,
}

impl Machine {
    pub fn describe(nats_server_version: &str) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            memory_gib: memory_kib / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned()),
            nats_server: nats_server_version.to_owned(),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} CPUs ({}), {:.1} GiB RAM, Linux {}, nats-server {}",
            self.cpus, self.cpu_model, self.memory_gib, self.kernel, self.nats_server
        )
    }
}

/// Everything one `jetpost bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    /// `quick` or `full`.
    pub mode: String,
    pub store: String,
    pub started_at: String,
    pub duration_seconds: f64,
    pub rows: Vec<Row>,
    pub latencies: Vec<LatencySeries>,
}

impl Report {
    /// The markdown table: scenario, metric, value, baseline/limit, % of it, target, verdict.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| scenario | metric | value | baseline / limit | % of it | target | verdict |"
        );
        let _ = writeln!(out, "|---|---|---:|---|---:|---|---|");
        for row in &self.rows {
            let value = match row.value {
                Some(v) => format!("{} {}", number(v), row.unit),
                None => "not measured".to_owned(),
            };
            let baseline = row.baseline.as_ref().map_or_else(String::new, |b| {
                format!("{} {} ({})", number(b.value), b.unit, b.label)
            });
            let percent = row
                .percent_of_baseline
                .map_or_else(String::new, |p| format!("{p:.0} %"));
            let verdict = match row.pass {
                Some(true) => "pass",
                Some(false) => "**FAIL**",
                None if row.target.is_some() => "n/a",
                None => "",
            };
            let mut metric = row.metric.clone();
            if let Some(note) = &row.note {
                let _ = write!(metric, " <br><sub>{note}</sub>");
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.scenario,
                metric,
                value,
                baseline,
                percent,
                row.target.as_deref().unwrap_or(""),
                verdict
            );
        }
        out
    }

    /// Targets met and missed.
    pub fn verdicts(&self) -> (usize, usize) {
        let met = self.rows.iter().filter(|r| r.pass == Some(true)).count();
        let missed = self.rows.iter().filter(|r| r.pass == Some(false)).count();
        (met, missed)
    }
}

/// A number for the table: thousands separated when large, a few decimals when small.
pub fn number(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let rounded = v.round() as i64;
        let digits = rounded.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if rounded < 0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        // Counts (accounts, replicas, connections) read as whole numbers: "0", not "0.00".
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_readable() {
        assert_eq!(number(1_234_567.4), "1,234,567");
        assert_eq!(number(999.6), "1000");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.234), "1.23");
        assert_eq!(number(-4321.0), "-4,321");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.5), "0.50");
    }

    #[test]
    fn rows_compare_with_their_baseline() {
        let row = Row::new("s", "m", Some(50.0), "x/s")
            .against("limit", Some(200.0), "x/s")
            .target("≥ 50 %", |r| r.percent_of_baseline.map(|p| p >= 50.0));
        assert_eq!(row.percent_of_baseline, Some(25.0));
        assert_eq!(row.pass, Some(false));
        let unmeasured = Row::new("s", "m", None, "x").target("t", |r| r.value.map(|_| true));
        assert_eq!(unmeasured.pass, None);
    }
}

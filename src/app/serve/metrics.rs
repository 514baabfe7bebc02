//! `GET /metrics`: Prometheus text. Counts and histograms over all runs;
//! nothing per run or per key (labels of unbounded number would grow the
//! scraper's and this process's memory without end).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    n: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (c, le) in self.counts.iter_mut().zip(BUCKETS) {
            if s <= le {
                *c += 1;
            }
        }
        self.sum += s;
        self.n += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (c, le) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.n);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.n);
    }
}

#[derive(Debug, Default)]
struct Inner {
    verdicts: BTreeMap<String, u64>,
    refused: BTreeMap<&'static str, u64>,
    queue_wait: Histogram,
    run: Histogram,
}

/// The service's counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn queued(&self, waited: Duration) {
        self.lock().queue_wait.observe(waited);
    }

    pub(crate) fn ended(&self, verdict: &str, took: Duration) {
        let mut m = self.lock();
        *m.verdicts.entry(verdict.to_string()).or_default() += 1;
        m.run.observe(took);
    }

    /// A request refused before it ran (`quota`, `queue_full`, `draining`).
    pub(crate) fn refused(&self, why: &'static str) {
        *self.lock().refused.entry(why).or_default() += 1;
    }

    /// The text, with the gauges read now.
    pub(crate) fn render(
        &self,
        running: usize,
        waiting: usize,
        engines: &[(String, bool)],
    ) -> String {
        let m = self.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP autodev_runs_total Runs ended, by verdict.\n# TYPE autodev_runs_total counter"
        );
        for (v, n) in &m.verdicts {
            let _ = writeln!(out, "autodev_runs_total{{verdict=\"{v}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP autodev_refused_total Run requests refused before they ran, by reason.\n# TYPE autodev_refused_total counter"
        );
        for (why, n) in &m.refused {
            let _ = writeln!(out, "autodev_refused_total{{reason=\"{why}\"}} {n}");
        }
        m.queue_wait.render(
            &mut out,
            "autodev_queue_wait_seconds",
            "Time a run waited for a slot.",
        );
        m.run.render(
            &mut out,
            "autodev_run_seconds",
            "Time from a run's slot to its result.",
        );
        let _ = writeln!(
            out,
            "# HELP autodev_runs_active Runs holding a slot.\n# TYPE autodev_runs_active gauge\nautodev_runs_active {running}"
        );
        let _ = writeln!(
            out,
            "# HELP autodev_runs_waiting Runs waiting for a slot.\n# TYPE autodev_runs_waiting gauge\nautodev_runs_waiting {waiting}"
        );
        let _ = writeln!(
            out,
            "# HELP autodev_engine_up Whether the engine answered the last health check, per engine.\n# TYPE autodev_engine_up gauge"
        );
        for (name, up) in engines {
            let name = name.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "autodev_engine_up{{engine=\"{name}\"}} {}",
                u8::from(*up)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counts_have_no_per_run_labels() {
        let m = Metrics::default();
        m.queued(Duration::from_millis(3));
        m.queued(Duration::from_secs(2));
        m.ended("passed", Duration::from_millis(700));
        m.ended("passed", Duration::from_millis(70));
        m.refused("quota");
        let engines = [
            ("unix:///a.sock".to_string(), true),
            ("tcp://h\"2".to_string(), false),
        ];
        let t = m.render(1, 4, &engines);
        assert!(
            t.contains("autodev_engine_up{engine=\"unix:///a.sock\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("autodev_engine_up{engine=\"tcp://h\\\"2\"} 0"),
            "{t}"
        );
        assert!(t.contains("autodev_queue_wait_seconds_bucket{le=\"0.005\"} 1"));
        assert!(t.contains("autodev_queue_wait_seconds_bucket{le=\"2.5\"} 2"));
        assert!(t.contains("autodev_runs_total{verdict=\"passed\"} 2"));
        assert!(t.contains("autodev_refused_total{reason=\"quota\"} 1"));
        assert!(t.contains("autodev_runs_waiting 4"));
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}

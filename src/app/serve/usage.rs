//! What each key's runs used: one JSON line per run in `usage.jsonl` in the
//! state folder (so usage survives a restart), and the last day's CPU in
//! memory for the daily quota.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const DAY: u64 = 24 * 3600;

/// One run's use, as the cgroup reported it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// When the run ended, Unix seconds.
    pub(crate) ts: u64,
    pub(crate) key: String,
    pub(crate) verdict: String,
    pub(crate) cpu_ms: u64,
    pub(crate) peak_memory_bytes: u64,
    pub(crate) wall_ms: u64,
}

/// A key's use over a period.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub(crate) key: String,
    pub(crate) since: u64,
    pub(crate) runs: u64,
    pub(crate) by_verdict: BTreeMap<String, u64>,
    pub(crate) cpu_seconds: f64,
    /// Peak memory × wall time, summed: an upper bound of the memory held
    /// (the cgroup reports a peak, not an integral).
    pub(crate) memory_gib_seconds: f64,
    pub(crate) peak_memory_bytes: u64,
    pub(crate) wall_seconds: f64,
}

/// The usage file, and the last day's CPU by key.
#[derive(Debug)]
pub(crate) struct Ledger {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    /// CPU milliseconds per key and minute, over the last day: bounded by
    /// keys × minutes, whatever the number of runs.
    day: Mutex<HashMap<String, VecDeque<(u64, u64)>>>,
}

/// Adds `ms` at time `ts` to a key's per-minute series.
fn add_minute(series: &mut VecDeque<(u64, u64)>, ts: u64, ms: u64) {
    let minute = ts / 60;
    match series.back_mut() {
        Some((m, total)) if *m == minute => *total += ms,
        _ => series.push_back((minute, ms)),
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl Ledger {
    /// Opens (or creates) the ledger in `state`, loading the last day's CPU.
    pub(crate) fn open(state: &Path) -> std::io::Result<Self> {
        let path = state.join("usage.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let since = now().saturating_sub(DAY);
        let mut day: HashMap<String, VecDeque<(u64, u64)>> = HashMap::new();
        for r in read(&path)?.into_iter().filter(|r| r.ts >= since) {
            add_minute(day.entry(r.key).or_default(), r.ts, r.cpu_ms);
        }
        Ok(Ledger {
            path,
            file: Mutex::new(Some(file)),
            day: Mutex::new(day),
        })
    }

    /// Adds a run's record. A write that fails (a full disk) is said once
    /// on stderr and the ledger goes on in memory: the run's result is
    /// still the caller's.
    pub(crate) fn add(&self, r: Record) {
        if let Ok(mut line) = serde_json::to_string(&r) {
            line.push('\n');
            let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = file.as_mut() {
                if let Err(e) = f.write_all(line.as_bytes()) {
                    autodev::errln!(
                        "autodev serve: writing {}: {e}; usage from now on is not kept",
                        self.path.display()
                    );
                    *file = None;
                }
            }
        }
        let mut day = self.day.lock().unwrap_or_else(|p| p.into_inner());
        add_minute(day.entry(r.key).or_default(), r.ts, r.cpu_ms);
    }

    /// CPU milliseconds `key` used in the last 24 hours, and when the
    /// oldest of them leaves the window (Unix seconds).
    pub(crate) fn last_day(&self, key: &str) -> (u64, u64) {
        let cutoff = now().saturating_sub(DAY) / 60;
        let mut day = self.day.lock().unwrap_or_else(|p| p.into_inner());
        let Some(series) = day.get_mut(key) else {
            return (0, now());
        };
        while series.front().is_some_and(|(m, _)| *m < cutoff) {
            series.pop_front();
        }
        let oldest = series.front().map_or(cutoff, |(m, _)| *m);
        (
            series.iter().map(|(_, ms)| ms).sum(),
            (oldest + 1) * 60 + DAY,
        )
    }

    /// `key`'s use since `since` (Unix seconds), from the file.
    pub(crate) fn summary(&self, key: &str, since: u64) -> std::io::Result<Summary> {
        let mut s = Summary {
            key: key.to_string(),
            since,
            ..Summary::default()
        };
        for r in read(&self.path)?
            .into_iter()
            .filter(|r| r.key == key && r.ts >= since)
        {
            s.runs += 1;
            *s.by_verdict.entry(r.verdict).or_default() += 1;
            s.cpu_seconds += r.cpu_ms as f64 / 1000.0;
            s.memory_gib_seconds +=
                r.peak_memory_bytes as f64 / f64::from(1u32 << 30) * r.wall_ms as f64 / 1000.0;
            s.peak_memory_bytes = s.peak_memory_bytes.max(r.peak_memory_bytes);
            s.wall_seconds += r.wall_ms as f64 / 1000.0;
        }
        Ok(s)
    }
}

/// Every readable record of the file; a torn last line (a crash mid-write)
/// is left out.
fn read(path: &Path) -> std::io::Result<Vec<Record>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        if let Ok(r) = serde_json::from_str(&line?) {
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_summed_per_key_and_survives_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let l = Ledger::open(d.path()).unwrap();
        for (key, verdict, cpu) in [
            ("a", "passed", 1500),
            ("a", "failed", 500),
            ("b", "passed", 9),
        ] {
            l.add(Record {
                ts: now(),
                key: key.into(),
                verdict: verdict.into(),
                cpu_ms: cpu,
                peak_memory_bytes: 1 << 30,
                wall_ms: 2000,
            });
        }
        assert_eq!(l.last_day("a").0, 2000);
        let again = Ledger::open(d.path()).unwrap();
        assert_eq!(again.last_day("a").0, 2000, "the quota survives a restart");
        let s = again.summary("a", 0).unwrap();
        assert_eq!((s.runs, s.cpu_seconds), (2, 2.0));
        assert_eq!(s.by_verdict["failed"], 1);
        assert_eq!(s.memory_gib_seconds, 4.0);
        assert_eq!(again.summary("a", now() + 10).unwrap().runs, 0);
    }
}

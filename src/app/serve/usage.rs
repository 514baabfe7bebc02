//! What each key's runs used: one JSON line per run, in one file per UTC
//! day (`usage/YYYY-MM-DD.jsonl` in the state folder), so usage survives a
//! restart, a period is read from its days' files only (line by line,
//! never whole), and days past `--keep-usage-days` are removed. The last day's
//! CPU is also kept in memory for the daily quota. A `usage.jsonl` of an
//! earlier version is still read.

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

/// The usage files, and the last day's CPU by key.
#[derive(Debug)]
pub(crate) struct Ledger {
    dir: PathBuf,
    /// The file of an earlier version (one for all days), read, never written.
    legacy: PathBuf,
    /// The day being written (days since the epoch) and its file.
    file: Mutex<Option<(u64, std::fs::File)>>,
    /// A write failed (a full disk): said once, usage kept in memory only.
    broken: std::sync::atomic::AtomicBool,
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

/// The UTC date of day `days` since the epoch, as `YYYY-MM-DD`.
fn date(days: u64) -> String {
    let day = UNIX_EPOCH + Duration::from_secs(days.saturating_mul(DAY));
    let mut text = humantime::format_rfc3339_seconds(day).to_string();
    text.truncate(10);
    text
}

impl Ledger {
    /// Opens (or creates) the ledger in `state`, loading the last day's CPU.
    pub(crate) fn open(state: &Path) -> std::io::Result<Self> {
        let dir = state.join("usage");
        std::fs::create_dir_all(&dir)?;
        let ledger = Ledger {
            dir,
            legacy: state.join("usage.jsonl"),
            file: Mutex::new(None),
            broken: std::sync::atomic::AtomicBool::new(false),
            day: Mutex::new(HashMap::new()),
        };
        let since = now().saturating_sub(DAY);
        let mut day: HashMap<String, VecDeque<(u64, u64)>> = HashMap::new();
        ledger.each_since(since, |r| {
            add_minute(day.entry(r.key).or_default(), r.ts, r.cpu_ms);
        })?;
        *ledger.day.lock().unwrap_or_else(|p| p.into_inner()) = day;
        Ok(ledger)
    }

    fn path_of(&self, days: u64) -> PathBuf {
        self.dir.join(format!("{}.jsonl", date(days)))
    }

    /// Adds a run's record. A write that fails (a full disk) is said once
    /// on stderr and the ledger goes on in memory: the run's result is
    /// still the caller's.
    pub(crate) fn add(&self, r: Record) {
        if !self.broken.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = self.write(&r) {
                self.broken
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                autodev::errln!(
                    "autodev serve: writing usage in {}: {e}; usage from now on is not kept",
                    self.dir.display()
                );
            }
        }
        let mut day = self.day.lock().unwrap_or_else(|p| p.into_inner());
        add_minute(day.entry(r.key).or_default(), r.ts, r.cpu_ms);
    }

    fn write(&self, r: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_string(r)?;
        line.push('\n');
        let days = r.ts / DAY;
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.as_ref().is_none_or(|(d, _)| *d != days) {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path_of(days))?;
            *file = Some((days, f));
        }
        match file.as_mut() {
            Some((_, f)) => f.write_all(line.as_bytes()),
            None => Ok(()),
        }
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

    /// `key`'s use since `since` (Unix seconds), from the files.
    pub(crate) fn summary(&self, key: &str, since: u64) -> std::io::Result<Summary> {
        let mut s = Summary {
            key: key.to_string(),
            since,
            ..Summary::default()
        };
        self.each_since(since, |r| {
            if r.key != key {
                return;
            }
            s.runs += 1;
            *s.by_verdict.entry(r.verdict).or_default() += 1;
            s.cpu_seconds += r.cpu_ms as f64 / 1000.0;
            s.memory_gib_seconds +=
                r.peak_memory_bytes as f64 / f64::from(1u32 << 30) * r.wall_ms as f64 / 1000.0;
            s.peak_memory_bytes = s.peak_memory_bytes.max(r.peak_memory_bytes);
            s.wall_seconds += r.wall_ms as f64 / 1000.0;
        })?;
        Ok(s)
    }

    /// Calls `each` with every record at or after `since`, reading only the
    /// files of those days (and an earlier version's single file).
    fn each_since(&self, since: u64, mut each: impl FnMut(Record)) -> std::io::Result<()> {
        let first = date(since / DAY);
        let mut days: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.len() == 10 && s >= first.as_str())
            })
            .collect();
        days.sort();
        for path in std::iter::once(self.legacy.clone()).chain(days) {
            read(&path, |r| {
                if r.ts >= since {
                    each(r);
                }
            })?;
        }
        Ok(())
    }

    /// Removes the days older than `keep`; returns how many.
    pub(crate) fn expire(&self, keep: Duration) -> usize {
        let last_kept = date(now().saturating_sub(keep.as_secs()) / DAY);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut n = 0;
        for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            let old = p
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.len() == 10 && s < last_kept.as_str());
            if old && std::fs::remove_file(&p).is_ok() {
                n += 1;
            }
        }
        n
    }
}

/// Every readable record of a file, one line at a time; a torn last line
/// (a crash mid-write) is left out, and a missing file holds none.
fn read(path: &Path, mut each: impl FnMut(Record)) -> std::io::Result<()> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for line in std::io::BufReader::new(file).lines() {
        if let Ok(r) = serde_json::from_str(&line?) {
            each(r);
        }
    }
    Ok(())
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

    #[test]
    fn dates_are_the_civil_calendar() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(11_016), "2000-02-29");
        assert_eq!(date(20_790), "2026-12-03");
        assert_eq!(date(20_818), "2026-12-31");
    }

    #[test]
    fn each_day_is_a_file_a_period_reads_its_days_and_old_days_expire() {
        let d = tempfile::tempdir().unwrap();
        // A file of the version before days: still read.
        let old = Record {
            ts: now() - 40 * DAY,
            key: "a".into(),
            verdict: "passed".into(),
            cpu_ms: 1000,
            peak_memory_bytes: 0,
            wall_ms: 10,
        };
        std::fs::write(
            d.path().join("usage.jsonl"),
            serde_json::to_string(&old).unwrap() + "\n",
        )
        .unwrap();
        let l = Ledger::open(d.path()).unwrap();
        for ago in [10 * DAY, DAY, 0] {
            l.add(Record {
                ts: now() - ago,
                ..old.clone()
            });
        }
        let files = std::fs::read_dir(d.path().join("usage")).unwrap().count();
        assert_eq!(files, 3, "one file per day");
        assert_eq!(l.summary("a", 0).unwrap().runs, 4);
        assert_eq!(l.summary("a", now() - 2 * DAY).unwrap().runs, 2);
        assert_eq!(l.expire(Duration::from_secs(5 * DAY)), 1);
        assert_eq!(l.summary("a", now() - 30 * DAY).unwrap().runs, 2);
    }
}

//! Batches over the API: a tasks file (JSON Lines, a batch task line's
//! shape) whose tasks go through the same fair queue as single runs, as
//! runs of the key that sent it. Kept in `batches/ID/` in the state folder
//! (`meta.json`, `tasks.jsonl`, `results.jsonl`): a result line is appended
//! when its task ends, so a service that restarts runs exactly the tasks
//! that have no result yet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::runs::Run;
use super::usage::now;
use super::{read_json, write_json, Refusal, Service, Tenant};
use autodev::batch::RunRequest;

/// Longest wait between two tries of a task the key's queue or quota
/// refused for now.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    key: String,
    created: u64,
    /// Lines that are tasks, valid or not (each gets one result).
    total: usize,
    cancelled: bool,
}

#[derive(Debug, Default)]
struct Progress {
    /// Lines of the tasks file that have their result.
    lines: HashSet<usize>,
    results: usize,
    by_verdict: BTreeMap<String, usize>,
    /// Samples and passes per task id, for pass@k.
    per_id: HashMap<String, (u32, u32)>,
}

/// One batch.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) id: String,
    pub(crate) key: String,
    dir: PathBuf,
    meta: Mutex<Meta>,
    progress: Mutex<Progress>,
    cancel: CancellationToken,
    live: Mutex<Vec<Arc<Run>>>,
    /// Serializes appends to the results file.
    out: Mutex<()>,
}

/// One result line.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    line: usize,
    id: Option<String>,
    sample: u32,
    verdict: String,
    result: Value,
}

impl Batch {
    fn new(dir: PathBuf, meta: Meta) -> Arc<Self> {
        Arc::new(Batch {
            id: meta.id.clone(),
            key: meta.key.clone(),
            dir,
            meta: Mutex::new(meta),
            progress: Mutex::default(),
            cancel: CancellationToken::new(),
            live: Mutex::default(),
            out: Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn results_path(&self) -> PathBuf {
        self.dir.join("results.jsonl")
    }

    /// Appends a result line and counts it; false when it could not be
    /// written (the task then has no result, and a restart runs it again).
    fn record(&self, l: &Line) -> bool {
        let Ok(mut text) = serde_json::to_string(l) else {
            return false;
        };
        text.push('\n');
        let _held = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let written = std::fs::OpenOptions::new()
            .append(true)
            .open(self.results_path())
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            autodev::errln!("autodev serve: batch {}: writing a result: {e}", self.id);
            return false;
        }
        self.count(l);
        true
    }

    fn count(&self, l: &Line) {
        let mut p = self.lock();
        if !p.lines.insert(l.line) {
            return;
        }
        p.results += 1;
        *p.by_verdict.entry(l.verdict.clone()).or_default() += 1;
        if let Some(id) = &l.id {
            let e = p.per_id.entry(id.clone()).or_default();
            e.0 += 1;
            e.1 += u32::from(l.verdict == "passed");
        }
    }

    /// How long ago its results file or its record last changed.
    fn idle_for(&self) -> Duration {
        [self.results_path(), self.dir.join("meta.json")]
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default()
    }

    /// `running`, `done` or `cancelled`.
    pub(crate) fn state(&self) -> &'static str {
        let (cancelled, total) = {
            let m = self.meta.lock().unwrap_or_else(|p| p.into_inner());
            (m.cancelled, m.total)
        };
        if cancelled {
            "cancelled"
        } else if self.lock().results >= total {
            "done"
        } else {
            "running"
        }
    }

    /// Progress, as `GET /v1/batches/{id}` answers it.
    pub(crate) fn status(&self) -> Value {
        let state = self.state();
        let meta = self.meta.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let p = self.lock();
        let pass_at_1 = (!p.per_id.is_empty()).then(|| {
            p.per_id
                .values()
                .map(|(n, c)| autodev::batch::pass_at_k(*n, *c, 1))
                .sum::<f64>()
                / p.per_id.len() as f64
        });
        json!({
            "id": self.id, "state": state, "created": meta.created, "total": meta.total,
            "done": p.results, "by_verdict": p.by_verdict, "pass_at_1": pass_at_1,
        })
    }

    /// The results so far (JSON Lines).
    pub(crate) fn results(&self) -> std::io::Result<Vec<u8>> {
        let _held = self.out.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::read(self.results_path())
    }

    /// Stops the batch: no task starts any more, those under way are cancelled.
    pub(crate) fn stop(&self) {
        {
            let mut m = self.meta.lock().unwrap_or_else(|p| p.into_inner());
            m.cancelled = true;
            let _ = write_json(&self.dir.join("meta.json"), &*m);
        }
        self.cancel.cancel();
        for r in self.live.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            r.cancel.cancel();
        }
    }
}

/// The batches of this service.
#[derive(Debug)]
pub(crate) struct Batches {
    root: PathBuf,
    map: Mutex<HashMap<String, Arc<Batch>>>,
    /// How long a finished batch stays after its last result.
    keep: Duration,
}

impl Batches {
    /// The batches under `root`, those of an earlier run of the service included.
    pub(crate) fn open(root: PathBuf, keep: Duration) -> std::io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        let mut map = HashMap::new();
        for e in std::fs::read_dir(&root)? {
            let dir = e?.path();
            let meta: Option<Meta> = read_json(&dir.join("meta.json"));
            let Some(meta) = meta.filter(|m| dir.ends_with(&m.id)) else {
                // Half made when the service stopped: it was never accepted.
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            };
            let b = Batch::new(dir, meta);
            let text = std::fs::read_to_string(b.results_path()).unwrap_or_default();
            // A torn last line (a crash mid-append) is no result: its task runs again.
            for l in text
                .lines()
                .filter_map(|l| serde_json::from_str::<Line>(l).ok())
            {
                b.count(&l);
            }
            map.insert(b.id.clone(), b);
        }
        Ok(Batches {
            root,
            map: Mutex::new(map),
            keep,
        })
    }

    /// Removes the finished or cancelled batches whose last result (or
    /// cancellation) is older than the keep time; returns how many.
    pub(crate) fn expire(&self) -> usize {
        let old: Vec<Arc<Batch>> = self
            .lock()
            .values()
            .filter(|b| b.state() != "running" && b.idle_for() >= self.keep)
            .cloned()
            .collect();
        for b in &old {
            self.lock().remove(&b.id);
            let _ = std::fs::remove_dir_all(&b.dir);
        }
        old.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Batch>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The batch `id` if `key` owns it.
    pub(crate) fn get(&self, id: &str, key: &str) -> Option<Arc<Batch>> {
        self.lock().get(id).filter(|b| b.key == key).cloned()
    }

    /// Batches that still have tasks to run.
    pub(crate) fn unfinished(&self) -> Vec<Arc<Batch>> {
        self.lock()
            .values()
            .filter(|b| b.state() == "running")
            .cloned()
            .collect()
    }
}

/// The tasks of a batch's file that have no result yet; lines that are no
/// task get their (invalid) result now.
fn tasks(svc: &Service, t: &Tenant, b: &Batch, text: &str) -> Vec<(usize, RunRequest)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
            continue;
        }
        let parsed = svc.parse(t, raw.as_bytes()).map_err(|r| match r {
            Refusal::Invalid(m) => m,
            Refusal::Busy(m, _) => m,
            Refusal::Draining => "the service is shutting down".into(),
        });
        let parsed = parsed.and_then(|req| {
            if seen.insert((req.id.clone(), req.sample)) {
                Ok(req)
            } else {
                Err(format!(
                    "duplicate id {:?} with sample {}",
                    req.id, req.sample
                ))
            }
        });
        if b.lock().lines.contains(&line) {
            continue;
        }
        match parsed {
            Ok(req) => out.push((line, req)),
            Err(msg) => {
                let v: Option<Value> = serde_json::from_str(raw).ok();
                let id = v
                    .as_ref()
                    .and_then(|v| v["id"].as_str())
                    .map(str::to_string);
                let sample = v.as_ref().and_then(|v| v["sample"].as_u64()).unwrap_or(0);
                b.record(&Line {
                    line,
                    id,
                    sample: u32::try_from(sample).unwrap_or(0),
                    verdict: "invalid_task".into(),
                    result: json!({"verdict": "invalid_task", "error": format!("line {line}: {msg}")}),
                });
            }
        }
    }
    out
}

impl Service {
    /// Accepts a batch of `t`'s: saves it, then runs its tasks.
    pub(crate) fn submit_batch(
        self: &Arc<Self>,
        t: &Tenant,
        body: &[u8],
    ) -> Result<Arc<Batch>, Refusal> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(Refusal::Draining);
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| Refusal::Invalid("body: the tasks file is not UTF-8".into()))?;
        let total = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .count();
        if total == 0 {
            return Err(Refusal::Invalid(
                "body: no task lines (JSON Lines, one task each)".into(),
            ));
        }
        let id = format!("bat_{:016x}", fastrand::u64(..));
        let dir = self.batches.root.join(&id);
        let meta = Meta {
            id: id.clone(),
            key: t.name.clone(),
            created: now(),
            total,
            cancelled: false,
        };
        let saved = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("tasks.jsonl"), text))
            .and_then(|()| std::fs::write(dir.join("results.jsonl"), b""))
            // meta.json last: a batch without it was never accepted.
            .and_then(|()| write_json(&dir.join("meta.json"), &meta));
        if let Err(e) = saved {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Refusal::Invalid(format!("saving the batch: {e}")));
        }
        let b = Batch::new(dir, meta);
        self.batches.lock().insert(id, b.clone());
        self.start_batch(b.clone(), t.clone(), text);
        Ok(b)
    }

    /// Runs what is left of a batch (a new one, or one a restart found).
    fn start_batch(self: &Arc<Self>, b: Arc<Batch>, t: Tenant, text: &str) {
        let todo = tasks(self, &t, &b, text);
        self.tasks.spawn(self.clone().drive(b, t, todo));
    }

    /// Picks up the batches an earlier run of the service left unfinished.
    pub(crate) fn resume_batches(self: &Arc<Self>) {
        for b in self.batches.unfinished() {
            let tenant = match self.tenant_named(&b.key) {
                Some(t) => t,
                None => {
                    autodev::errln!(
                        "autodev serve: batch {}: its key {:?} is gone; cancelled",
                        b.id,
                        b.key
                    );
                    b.stop();
                    continue;
                }
            };
            let text = std::fs::read_to_string(b.dir.join("tasks.jsonl")).unwrap_or_default();
            autodev::errln!(
                "autodev serve: resuming batch {} ({})",
                b.id,
                b.status()["done"]
            );
            self.start_batch(b, tenant, &text);
        }
    }

    async fn drive(self: Arc<Self>, b: Arc<Batch>, t: Tenant, todo: Vec<(usize, RunRequest)>) {
        let width = t
            .key
            .as_ref()
            .and_then(|k| k.max_concurrent)
            .unwrap_or(self.jobs)
            .max(1);
        let mut pending = todo.into_iter();
        let mut set = JoinSet::new();
        'feed: loop {
            while set.len() < width {
                let Some((line, req)) = pending.next() else {
                    break;
                };
                let (id, sample) = (req.id.clone(), req.sample);
                let run = loop {
                    if b.cancel.is_cancelled() || self.draining.load(Ordering::SeqCst) {
                        break 'feed;
                    }
                    match self.submit(&t, req.clone(), None) {
                        Ok(run) => break run,
                        Err(Refusal::Busy(_, secs)) => {
                            let wait = Duration::from_secs(secs).min(MAX_BACKOFF);
                            tokio::select! {
                                () = tokio::time::sleep(wait) => {}
                                () = b.cancel.cancelled() => break 'feed,
                            }
                        }
                        Err(_) => break 'feed,
                    }
                };
                b.live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(run.clone());
                set.spawn(async move {
                    let result = run.finished().await;
                    (line, id, sample, result, run)
                });
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            if let Ok((line, id, sample, result, run)) = joined {
                self.batch_result(&b, line, id, sample, result, &run);
            }
        }
        // Stopped early (cancel, drain): what is under way ends, and is
        // recorded unless it was cut short.
        while let Some(joined) = set.join_next().await {
            if let Ok((line, id, sample, result, run)) = joined {
                self.batch_result(&b, line, id, sample, result, &run);
            }
        }
    }

    fn batch_result(
        &self,
        b: &Batch,
        line: usize,
        id: String,
        sample: u32,
        result: Value,
        run: &Arc<Run>,
    ) {
        b.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| !Arc::ptr_eq(r, run));
        let verdict = result["verdict"]
            .as_str()
            .unwrap_or("sandbox_error")
            .to_string();
        // A run cut short by a cancel or a drain has no result: a restart
        // (or nobody, for a cancel) runs it again.
        let cut = verdict == "interrupted"
            && (b.cancel.is_cancelled() || self.draining.load(Ordering::SeqCst));
        if !cut {
            b.record(&Line {
                line,
                id: Some(id),
                sample,
                verdict,
                result,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(root: &std::path::Path, id: &str, total: usize, cancelled: bool) {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let meta = Meta {
            id: id.into(),
            key: "k".into(),
            created: 0,
            total,
            cancelled,
        };
        write_json(&dir.join("meta.json"), &meta).unwrap();
    }

    #[test]
    fn finished_batches_expire_after_the_keep_time_and_running_ones_never() {
        let d = tempfile::tempdir().unwrap();
        batch(d.path(), "done", 0, false);
        batch(d.path(), "cancelled", 3, true);
        batch(d.path(), "running", 2, false);
        let kept = Batches::open(d.path().to_path_buf(), Duration::from_secs(3600)).unwrap();
        assert_eq!(kept.expire(), 0, "all are younger than an hour");
        let b = Batches::open(d.path().to_path_buf(), Duration::ZERO).unwrap();
        assert_eq!(b.expire(), 2);
        assert!(b.get("running", "k").is_some());
        assert!(b.get("done", "k").is_none() && !d.path().join("done").exists());
        assert!(!d.path().join("cancelled").exists());
    }
}

//! `autodev batch`: flags to a [`BatchConfig`], progress on the terminal,
//! the summary and the exit code.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use super::UsageError;
use crate::cli::{exit, BatchArgs, Jobs};
use autodev::batch::{self, BatchConfig, TaskResult, TaskVerdict};
use autodev::profile::{Profile, Profiles};

pub(super) async fn batch_cmd(
    args: BatchArgs,
    profile: &Profile,
    profiles: &Profiles,
    stop: &CancellationToken,
    kill: &CancellationToken,
) -> Result<ExitCode> {
    let defaults = args.sandbox.run_spec("", "", &profile.exclude)?;
    let evaluation = super::swebench::prepare(&args)?;
    let tasks = match (&evaluation, &args.tasks) {
        (Some(e), _) => e.tasks.clone(),
        (None, Some(t)) => t.clone(),
        (None, None) => return Err(UsageError("give a tasks file, or --swebench".into()).into()),
    };
    let cfg = BatchConfig {
        tasks,
        base: evaluation.as_ref().map(|e| e.repos.clone()),
        profiles: profiles.clone(),
        out: args.out.clone(),
        jobs: 0,
        retries: args.retries,
        retry_starved: args.retry_starved,
        prefetch: args.prefetch.unwrap_or(1),
        resume: args.resume,
        defaults,
        scratch: args.scratch.clone(),
        allow_task_overrides: args.allow_task_overrides,
        rerun: args.rerun.clone(),
        conventions: profile.prompt.clone(),
        setup: Some(autodev::env::Setup {
            profile: profile.name.clone(),
            settings: args.setup.settings().map_err(super::UsageError)?,
        }),
    };
    // Not `is_file`: `-`-less pipes such as /dev/stdin or <(...) are fine too.
    match std::fs::metadata(&cfg.tasks).or_else(|e| {
        // `-` is standard input.
        if cfg.tasks == std::path::Path::new("-") {
            std::fs::metadata("/dev/stdin")
        } else {
            Err(e)
        }
    }) {
        Ok(m) if m.is_dir() => {
            return Err(
                UsageError(format!("tasks file {} is a folder", cfg.tasks.display())).into(),
            )
        }
        Ok(_) => {}
        Err(e) => {
            return Err(UsageError(format!(
                "cannot read tasks file {}: {e}",
                cfg.tasks.display()
            ))
            .into())
        }
    }
    let sandbox = super::connect(&args.sandbox.engines).await?;
    let jobs = match args.jobs {
        Jobs::Fixed(j) => j,
        // Twice every engine's slots (each engine's CPU count unless
        // given): while one task's container starts (the engine's CPU),
        // another's test can use the CPU. A controller that moved the level
        // while the batch ran did no better within the host's noise
        // (docs/batch.md), so the level is fixed.
        Jobs::Auto => 2 * sandbox.total_slots().await.max(1),
    };
    let cfg = BatchConfig { jobs, ..cfg };
    let mut progress = BatchProgress::new();
    let summary = batch::run(sandbox, &cfg, &mut progress, stop, kill).await?;
    if args.json {
        autodev::outln!("{}", serde_json::to_string(&summary)?);
    } else {
        autodev::errln!("{}", batch_report(&summary, &cfg.out));
    }
    if let Some(e) = &evaluation {
        autodev::errln!("{}", e.finish(&cfg.out)?);
    }
    Ok(ExitCode::from(if summary.interrupted {
        exit::INTERRUPTED
    } else {
        unjudged_exit(&summary.this_run).unwrap_or(exit::OK)
    }))
}

/// When this invocation ran tasks but judged none of them, the batch did
/// not do its job: the exit code says why (infrastructure, model, tasks).
fn unjudged_exit(this_run: &std::collections::BTreeMap<TaskVerdict, usize>) -> Option<u8> {
    if this_run.is_empty() || this_run.keys().any(|v| v.is_judgement()) {
        return None;
    }
    Some(if this_run.contains_key(&TaskVerdict::SandboxError) {
        exit::SANDBOX
    } else if this_run.contains_key(&TaskVerdict::ModelError) {
        exit::MODEL
    } else {
        exit::USAGE
    })
}

/// Human summary of a batch.
fn batch_report(s: &batch::Summary, out: &Path) -> String {
    let counts: Vec<String> = s
        .verdicts
        .iter()
        .map(|(v, n)| format!("{} {n}", verdict_name(*v)))
        .collect();
    let mut text = format!(
        "autodev batch: {} results in {}{}; ran {} this time, skipped {} already done",
        s.total,
        out.display(),
        if counts.is_empty() {
            String::new()
        } else {
            format!(" ({})", counts.join(", "))
        },
        s.ran,
        s.skipped
    );
    match s.pass_rate {
        Some(r) => text.push_str(&format!(
            "\n  pass rate {:.1}% (sandbox, model and task errors left out)",
            r * 100.0
        )),
        None => text.push_str("\n  no pass rate: no task was judged"),
    }
    for (k, v) in &s.pass_at_k {
        text.push_str(&format!("\n  pass@{k} {v:.4}"));
    }
    if let Some(note) = &s.pass_at_k_note {
        text.push_str(&format!("\n  {note}"));
    }
    if s.cpu_ms_total > 0 {
        text.push_str(&format!(
            "\n  CPU time of the tests {:.1}s",
            s.cpu_ms_total as f64 / 1000.0
        ));
    }
    if let Some((id, ms)) = &s.slowest {
        text.push_str(&format!("; slowest {id} ({:.1}s)", *ms as f64 / 1000.0));
    }
    if let Some((id, bytes)) = &s.hungriest {
        text.push_str(&format!("; most memory {id} ({} MiB)", bytes >> 20));
    }
    text.push_str(&format!(
        "\n  wall time {:.1}s, {:.2} tasks/s{}",
        s.wall_seconds,
        s.tasks_per_second,
        if s.interrupted {
            " (interrupted: run again with --resume)"
        } else {
            ""
        }
    ));
    text
}

fn verdict_name(v: TaskVerdict) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A progress bar on a terminal, a line every few seconds elsewhere.
struct BatchProgress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    done: usize,
    /// Of them, tasks run (not invalid lines).
    ran: usize,
    last_line: std::time::Instant,
    started: std::time::Instant,
}

impl BatchProgress {
    fn new() -> Self {
        BatchProgress {
            bar: None,
            total: 0,
            done: 0,
            ran: 0,
            last_line: std::time::Instant::now(),
            started: std::time::Instant::now(),
        }
    }
}

impl batch::Progress for BatchProgress {
    fn start(&mut self, to_run: usize) {
        self.total = to_run;
        self.started = std::time::Instant::now();
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = indicatif::ProgressBar::new(to_run as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed} ETA {eta}]",
            ) {
                bar.set_style(style);
            }
            self.bar = Some(bar);
        } else {
            autodev::errln!("autodev batch: {to_run} task(s) to run");
        }
    }

    fn task_done(
        &mut self,
        r: &TaskResult,
        counts: &std::collections::BTreeMap<TaskVerdict, usize>,
    ) {
        self.done += 1;
        // The rate is of tasks run, as in the summary: a line that is no
        // task took no time.
        if r.verdict != TaskVerdict::InvalidTask {
            self.ran += 1;
        }
        let msg: Vec<String> = counts
            .iter()
            .map(|(v, n)| format!("{} {n}", verdict_name(*v)))
            .collect();
        if let Some(bar) = &self.bar {
            bar.set_message(msg.join(", "));
            bar.inc(1);
        } else if self.last_line.elapsed() >= std::time::Duration::from_secs(5)
            || self.done == self.total
        {
            self.last_line = std::time::Instant::now();
            let rate = self.ran as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            autodev::errln!(
                "autodev batch: {}/{} done ({}), {:.2} tasks/s",
                self.done,
                self.total,
                msg.join(", "),
                rate
            );
        }
    }

    fn draining(&mut self, running: usize) {
        let line =
            format!("stopping: waiting for {running} running task(s); Ctrl-C again to kill them");
        match &self.bar {
            Some(bar) => bar.println(line),
            None => autodev::errln!("autodev batch: {line}"),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

//! `autodev batch --swebench`: a dataset's instances and a model's
//! predictions to a tasks file of repository tasks (written beside the
//! results, so `--resume` runs exactly what is missing), and, after the
//! batch, the harness-style report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::UsageError;
use crate::cli::BatchArgs;
use autodev::batch::swebench::{self, Instance, Prediction};

/// A SWE-bench evaluation's inputs, read.
pub(super) struct Evaluation {
    instances: Vec<Instance>,
    predictions: Vec<Prediction>,
    /// The generated tasks file.
    pub(super) tasks: PathBuf,
    /// The repositories folder (task paths are relative to it).
    pub(super) repos: PathBuf,
    report: PathBuf,
}

/// `FILE.jsonl` → `FILE.EXT` beside it.
fn beside(out: &Path, ext: &str) -> PathBuf {
    out.with_extension(ext)
}

/// Reads the instances and predictions `args` names and writes their task
/// lines; `None` when `--swebench` is not given.
pub(super) fn prepare(args: &BatchArgs) -> Result<Option<Evaluation>> {
    let (Some(inst), Some(preds), Some(repos)) = (&args.swebench, &args.predictions, &args.repos)
    else {
        return Ok(None);
    };
    let usage = |e: swebench::SwebenchError| UsageError(e.to_string());
    let instances = swebench::read_instances(inst).map_err(usage)?;
    let predictions = swebench::read_predictions(preds).map_err(usage)?;
    let specs = match &args.swebench_specs {
        Some(p) => swebench::read_specs(p).map_err(usage)?,
        None => BTreeMap::new(),
    };
    if !repos.is_dir() {
        return Err(UsageError(format!(
            "--repos {} is not a folder: give the folder holding the instances' repositories",
            repos.display()
        ))
        .into());
    }
    let lines = swebench::tasks(&instances, &predictions, repos, &specs)
        .map_err(|e| UsageError(format!("{}: {e}", preds.display())))?;
    let tasks = beside(&args.out, "tasks.jsonl");
    let report = args
        .report
        .clone()
        .unwrap_or_else(|| beside(&args.out, "report.json"));
    for (what, p) in [("tasks", &tasks), ("report", &report)] {
        if p == &args.out || p == inst || p == preds {
            return Err(UsageError(format!(
                "the {what} file would be {}, which is an input or the results: give --out another name",
                p.display()
            ))
            .into());
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&tasks, text)
        .map_err(|e| UsageError(format!("writing {}: {e}", tasks.display())))?;
    Ok(Some(Evaluation {
        instances,
        predictions,
        tasks,
        repos: repos.clone(),
        report,
    }))
}

impl Evaluation {
    /// Writes the report from the results file; returns its path and a
    /// one-line summary.
    pub(super) fn finish(&self, out: &Path) -> Result<String> {
        let results = autodev::batch::read_results(out)?;
        let r = swebench::report(&self.instances, &self.predictions, &results);
        let text = serde_json::to_string_pretty(&r)?;
        std::fs::write(&self.report, text + "\n")
            .map_err(|e| UsageError(format!("writing {}: {e}", self.report.display())))?;
        Ok(format!(
            "autodev batch: SWE-bench report {}: {} of {} submitted resolved, {} unresolved, {} empty patch, {} error{}",
            self.report.display(),
            r.resolved_instances,
            r.submitted_instances,
            r.unresolved_instances,
            r.empty_patch_instances,
            r.error_instances,
            if r.incomplete_ids.is_empty() {
                String::new()
            } else {
                format!(", {} not run yet (--resume)", r.incomplete_ids.len())
            }
        ))
    }
}

//! SWE-bench's files in, its report out: a dataset's instances and a
//! model's predictions become repository task lines (see `repo.rs`); a
//! batch's results become the report its harness writes, so leaderboard
//! scripts read it unchanged.
//!
//! Instances are read as JSON Lines or one JSON array, with the dataset's
//! field names (`instance_id`, `repo`, `base_commit`, `test_patch`,
//! `FAIL_TO_PASS`, `PASS_TO_PASS`, the last two as lists or JSON-encoded
//! strings), plus `install_cmd`, `test_cmd` and `language` where the
//! dataset has them, else from a per-repository table (`specs`).
//! Predictions are `instance_id`, `model_name_or_path`, `model_patch`, as
//! JSON Lines, an array, or an object keyed by instance id.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::results::{TaskResult, TaskVerdict};

/// A file of instances or predictions that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {detail}")]
pub struct SwebenchError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and where.
    pub detail: String,
}

/// One dataset instance (the fields autodev uses).
#[derive(Debug, Clone, Deserialize)]
pub struct Instance {
    /// The instance's id.
    pub instance_id: String,
    /// `owner/name`.
    #[serde(default)]
    pub repo: String,
    /// The commit the patches apply to.
    #[serde(default)]
    pub base_commit: Option<String>,
    /// The tests the benchmark adds.
    #[serde(default)]
    pub test_patch: String,
    /// The tests that must go from failing to passing.
    #[serde(rename = "FAIL_TO_PASS", default)]
    pub fail_to_pass: Value,
    /// The tests that must keep passing.
    #[serde(rename = "PASS_TO_PASS", default)]
    pub pass_to_pass: Value,
    /// The install and test commands and the language, where the dataset
    /// has them.
    #[serde(flatten)]
    pub commands: Spec,
    /// A tarball of the repository at `base_commit`, in the repositories folder.
    #[serde(default)]
    pub source_tarball: Option<String>,
}

/// One prediction.
#[derive(Debug, Clone, Deserialize)]
pub struct Prediction {
    /// The instance it is for.
    pub instance_id: String,
    /// The model that made it.
    #[serde(default)]
    pub model_name_or_path: Option<String>,
    /// The candidate change (unified diff); `null` or empty for none.
    #[serde(default)]
    pub model_patch: Option<String>,
}

/// An instance's commands, from the instance itself or from a
/// per-repository table for datasets whose instances carry none (SWE-bench
/// keeps them in its harness, by repository and version).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Spec {
    /// The install step (the set-up phase).
    #[serde(default)]
    pub install_cmd: Option<String>,
    /// The test command.
    #[serde(default)]
    pub test_cmd: Option<String>,
    /// The language (an autodev profile name: python, go, ...).
    #[serde(default)]
    pub language: Option<String>,
}

fn records<T: for<'de> Deserialize<'de>>(
    path: &Path,
    keyed: bool,
) -> Result<Vec<T>, SwebenchError> {
    let err = |detail: String| SwebenchError {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('[')
        || (keyed && trimmed.starts_with('{') && !is_jsonl(trimmed))
    {
        match serde_json::from_str::<Value>(trimmed).map_err(|e| err(format!("not JSON: {e}")))? {
            Value::Array(a) => a,
            // One record on one line.
            Value::Object(o) if o.contains_key("instance_id") => vec![Value::Object(o)],
            // Predictions keyed by instance id (the harness accepts this too).
            Value::Object(o) => o
                .into_iter()
                .map(|(k, mut v)| {
                    if let Some(obj) = v.as_object_mut() {
                        obj.entry("instance_id").or_insert(Value::from(k));
                    }
                    v
                })
                .collect(),
            _ => return Err(err("expected a JSON array or JSON Lines".into())),
        }
    } else {
        let mut v = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            v.push(serde_json::from_str(line).map_err(|e| err(format!("line {}: {e}", i + 1)))?);
        }
        v
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| serde_json::from_value(v).map_err(|e| err(format!("record {}: {e}", i + 1))))
        .collect()
}

/// Whether `text` is JSON Lines (a second value follows the first line's).
fn is_jsonl(text: &str) -> bool {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or("");
    serde_json::from_str::<Value>(first).is_ok() && lines.next().is_some()
}

/// Reads a dataset's instances.
pub fn read_instances(path: &Path) -> Result<Vec<Instance>, SwebenchError> {
    records(path, false)
}

/// Reads a predictions file.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>, SwebenchError> {
    records(path, true)
}

/// Reads a per-repository table: `{"owner/name": {"install_cmd": ..., "test_cmd": ..., "language": ...}}`.
pub fn read_specs(path: &Path) -> Result<BTreeMap<String, Spec>, SwebenchError> {
    let err = |detail: String| SwebenchError {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    serde_json::from_str(&text).map_err(|e| err(e.to_string()))
}

/// Where the repository of `inst` is in `repos`: a tarball named after the
/// instance (`ID.tar.gz`, `.tgz`, `.tar`) or its `source_tarball`, else a
/// git repository or bare mirror named `owner__name` (`.git` optional).
/// Relative to `repos`; `None` when there is none.
pub fn locate(repos: &Path, inst: &Instance) -> Option<(String, bool)> {
    let mut names: Vec<String> = ["tar.gz", "tgz", "tar"]
        .iter()
        .map(|e| format!("{}.{e}", inst.instance_id))
        .collect();
    names.extend(inst.source_tarball.clone());
    if let Some(n) = names
        .into_iter()
        .find(|n| safe_name(n) && repos.join(n).is_file())
    {
        return Some((n, true));
    }
    let git = inst.repo.replace('/', "__");
    [git.clone(), format!("{git}.git")]
        .into_iter()
        .find(|n| safe_name(n) && repos.join(n).is_dir())
        .map(|n| (n, false))
}

/// A file name that stays in its folder.
fn safe_name(n: &str) -> bool {
    !n.is_empty() && !n.contains('/') && n != "." && n != ".." && !n.contains('\0')
}

/// The task line for an instance and its prediction, or why there is none
/// (the caller writes it as that instance's invalid result).
pub fn task_line(
    inst: &Instance,
    pred: &Prediction,
    repos: &Path,
    specs: &BTreeMap<String, Spec>,
) -> Result<Value, String> {
    let spec = specs.get(&inst.repo).cloned().unwrap_or_default();
    let test_cmd = inst.commands.test_cmd.clone().or(spec.test_cmd).ok_or_else(|| {
        format!(
            "no test command for {} ({}): the instance has no test_cmd and no --swebench-specs entry names {:?}",
            inst.instance_id, inst.repo, inst.repo
        )
    })?;
    let (repo, tarball) = locate(repos, inst).ok_or_else(|| {
        format!(
            "no repository for {} in {}: expected {}.tar.gz or a git repository {}",
            inst.instance_id,
            repos.display(),
            inst.instance_id,
            inst.repo.replace('/', "__")
        )
    })?;
    let mut line = serde_json::json!({
        "id": inst.instance_id,
        "repo": repo,
        "patch": pred.model_patch.clone().unwrap_or_default(),
        "test_patch": inst.test_patch,
        "FAIL_TO_PASS": inst.fail_to_pass,
        "PASS_TO_PASS": inst.pass_to_pass,
        "test_cmd": test_cmd,
    });
    let obj = line.as_object_mut().expect("a JSON object");
    if !tarball {
        if let Some(c) = &inst.base_commit {
            obj.insert("base_commit".into(), Value::from(c.clone()));
        }
    }
    if let Some(i) = inst.commands.install_cmd.clone().or(spec.install_cmd) {
        obj.insert("setup".into(), Value::from(i));
    }
    if let Some(l) = inst.commands.language.clone().or(spec.language) {
        obj.insert("profile".into(), Value::from(l));
    }
    Ok(line)
}

/// The tasks of a SWE-bench evaluation: one line per predicted instance
/// (predictions for instances the dataset lacks are an error, as in the
/// harness), and the ids submitted.
pub fn tasks(
    instances: &[Instance],
    predictions: &[Prediction],
    repos: &Path,
    specs: &BTreeMap<String, Spec>,
) -> Result<Vec<String>, String> {
    let by_id: BTreeMap<&str, &Instance> = instances
        .iter()
        .map(|i| (i.instance_id.as_str(), i))
        .collect();
    let mut lines = Vec::new();
    let mut seen = BTreeSet::new();
    for p in predictions {
        if !seen.insert(p.instance_id.as_str()) {
            return Err(format!("two predictions for {}", p.instance_id));
        }
        let Some(inst) = by_id.get(p.instance_id.as_str()) else {
            return Err(format!(
                "a prediction for {}, which the instances file does not have",
                p.instance_id
            ));
        };
        let line = match task_line(inst, p, repos, specs) {
            Ok(l) => l,
            // A task line the batch will report as this instance's error.
            Err(why) => serde_json::json!({"id": p.instance_id, "runner": "", "unusable": why}),
        };
        lines.push(line.to_string());
    }
    Ok(lines)
}

/// The report SWE-bench's harness writes after a run (schema 2), with
/// autodev's `patch_failed_ids` beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Instances in the dataset.
    pub total_instances: usize,
    /// Instances with a prediction.
    pub submitted_instances: usize,
    /// Instances whose tests ran and were judged.
    pub completed_instances: usize,
    /// Resolved.
    pub resolved_instances: usize,
    /// Judged and not resolved.
    pub unresolved_instances: usize,
    /// Predictions without a patch.
    pub empty_patch_instances: usize,
    /// Instances whose evaluation failed (patch did not apply, set-up,
    /// sandbox, unusable instance).
    pub error_instances: usize,
    /// Ids of completed instances.
    pub completed_ids: Vec<String>,
    /// Ids submitted with no result yet.
    pub incomplete_ids: Vec<String>,
    /// Ids with an empty patch.
    pub empty_patch_ids: Vec<String>,
    /// Ids submitted.
    pub submitted_ids: Vec<String>,
    /// Ids resolved.
    pub resolved_ids: Vec<String>,
    /// Ids unresolved.
    pub unresolved_ids: Vec<String>,
    /// Ids in error.
    pub error_ids: Vec<String>,
    /// Ids whose patch did not apply (also in `error_ids`, as the harness counts them).
    pub patch_failed_ids: Vec<String>,
    /// The harness's report schema.
    pub schema_version: u32,
}

/// The report for `predictions` over `instances`, from a batch's results.
pub fn report(
    instances: &[Instance],
    predictions: &[Prediction],
    results: &[TaskResult],
) -> Report {
    let by_id: BTreeMap<&str, &TaskResult> = results
        .iter()
        .filter_map(|r| r.id.as_deref().map(|id| (id, r)))
        .collect();
    let mut rep = Report {
        total_instances: instances.len(),
        submitted_instances: predictions.len(),
        schema_version: 2,
        ..Report::default()
    };
    let mut ids: Vec<&str> = predictions.iter().map(|p| p.instance_id.as_str()).collect();
    ids.sort_unstable();
    for id in ids {
        let id_s = id.to_string();
        rep.submitted_ids.push(id_s.clone());
        let Some(r) = by_id.get(id) else {
            rep.incomplete_ids.push(id_s);
            continue;
        };
        match r.verdict {
            TaskVerdict::Resolved => {
                rep.completed_ids.push(id_s.clone());
                rep.resolved_ids.push(id_s);
            }
            TaskVerdict::Unresolved => {
                rep.completed_ids.push(id_s.clone());
                rep.unresolved_ids.push(id_s);
            }
            TaskVerdict::EmptyPatch => rep.empty_patch_ids.push(id_s),
            TaskVerdict::PatchFailed => {
                rep.patch_failed_ids.push(id_s.clone());
                rep.error_ids.push(id_s);
            }
            _ => rep.error_ids.push(id_s),
        }
    }
    rep.completed_instances = rep.completed_ids.len();
    rep.resolved_instances = rep.resolved_ids.len();
    rep.unresolved_instances = rep.unresolved_ids.len();
    rep.empty_patch_instances = rep.empty_patch_ids.len();
    rep.error_instances = rep.error_ids.len();
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_and_predictions_in_the_harness_forms() {
        let d = tempfile::tempdir().unwrap();
        let inst = d.path().join("i.json");
        std::fs::write(
            &inst,
            r#"[{"instance_id": "o__r-1", "repo": "o/r", "base_commit": "abc", "test_patch": "",
                "FAIL_TO_PASS": "[\"t.py::test_a\"]", "PASS_TO_PASS": ["t.py::test_b"], "version": "1.0"}]"#,
        )
        .unwrap();
        let preds = d.path().join("p.json");
        std::fs::write(
            &preds,
            r#"{"o__r-1": {"model_name_or_path": "m", "model_patch": null}}"#,
        )
        .unwrap();
        let i = read_instances(&inst).unwrap();
        let p = read_predictions(&preds).unwrap();
        assert_eq!((i.len(), p[0].instance_id.as_str()), (1, "o__r-1"));
        let repos = d.path().join("repos");
        std::fs::create_dir_all(repos.join("o__r")).unwrap();
        let mut specs = BTreeMap::new();
        specs.insert(
            "o/r".to_string(),
            Spec {
                test_cmd: Some("pytest".into()),
                ..Spec::default()
            },
        );
        let line = task_line(&i[0], &p[0], &repos, &specs).unwrap();
        assert_eq!(line["repo"], "o__r");
        assert_eq!(line["base_commit"], "abc");
        assert_eq!(line["patch"], "");
        assert_eq!(line["FAIL_TO_PASS"], "[\"t.py::test_a\"]");
        let e = task_line(&i[0], &p[0], &repos, &BTreeMap::new()).unwrap_err();
        assert!(e.contains("no test command"), "{e}");
        std::fs::write(repos.join("o__r-1.tar.gz"), b"").unwrap();
        let line = task_line(&i[0], &p[0], &repos, &specs).unwrap();
        assert_eq!(line["repo"], "o__r-1.tar.gz");
        assert!(
            line.get("base_commit").is_none(),
            "a tarball is the tree at its commit"
        );
        let unknown = Prediction {
            instance_id: "x".into(),
            model_name_or_path: None,
            model_patch: None,
        };
        assert!(tasks(&i, &[unknown], &repos, &specs)
            .unwrap_err()
            .contains("does not have"));
    }

    #[test]
    fn the_report_counts_as_the_harness_does() {
        let inst = |id: &str| Instance {
            instance_id: id.into(),
            repo: String::new(),
            base_commit: None,
            test_patch: String::new(),
            fail_to_pass: Value::Null,
            pass_to_pass: Value::Null,
            commands: Spec::default(),
            source_tarball: None,
        };
        let pred = |id: &str| Prediction {
            instance_id: id.into(),
            model_name_or_path: None,
            model_patch: None,
        };
        let result = |id: &str, v: TaskVerdict| TaskResult {
            verdict: v,
            ..TaskResult::pending(1, Some(id.into()), 0)
        };
        let ids = ["a", "b", "c", "d", "e", "f"];
        let instances: Vec<Instance> = ids.iter().map(|i| inst(i)).chain([inst("g")]).collect();
        let preds: Vec<Prediction> = ids.iter().map(|i| pred(i)).collect();
        let results = [
            result("a", TaskVerdict::Resolved),
            result("b", TaskVerdict::Unresolved),
            result("c", TaskVerdict::EmptyPatch),
            result("d", TaskVerdict::PatchFailed),
            result("e", TaskVerdict::SandboxError),
        ];
        let r = report(&instances, &preds, &results);
        assert_eq!(
            (
                r.total_instances,
                r.submitted_instances,
                r.completed_instances
            ),
            (7, 6, 2)
        );
        assert_eq!(r.resolved_ids, ["a"]);
        assert_eq!(r.unresolved_ids, ["b"]);
        assert_eq!(r.empty_patch_ids, ["c"]);
        assert_eq!(r.error_ids, ["d", "e"]);
        assert_eq!(r.patch_failed_ids, ["d"]);
        assert_eq!(r.incomplete_ids, ["f"]);
        assert_eq!(r.schema_version, 2);
    }
}

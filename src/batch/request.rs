//! One run a program asks for (the service's `POST /v1/runs`): a task
//! line's shape, read by the same parser with the same rules, minus what
//! only makes sense in a tasks file on the operator's own disk.

use std::path::Path;

use serde_json::Value;

use super::scratch;
use super::task::{parse_task, Kind, Source};
use crate::agent::AgentError;
use crate::env::SetupMode;
use crate::sandbox::RunSpec;

/// Fields of a task line a run request may not hold, and why.
const NOT_FOR_RUNS: &[(&str, &str)] = &[
    (
        "workspace",
        "a caller cannot name a folder on the service's host; send the files as \"files\": {path: text}",
    ),
    ("holdout", "held-out tests are for batches"),
    ("solution", "a run takes files, not a reply to apply"),
    ("task", "a run does not ask a model; send the files to test"),
    ("model", "a run does not ask a model"),
    ("max_iters", "a run does not ask a model"),
    ("repo", "repository tasks are for batches; send the files to test"),
    ("profile", "a run takes the service's profile; name an image instead"),
    ("test_results", "repository tasks are for batches"),
];

/// A validated run request.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The caller's name for the run (`"run"` when it gave none).
    pub id: String,
    /// Which sample of the id this is (a batch's pass@k).
    pub sample: u32,
    /// What to run and under which limits; its workspace is set by
    /// [`RunRequest::materialize`].
    pub spec: RunSpec,
    /// The set-up the request asked for (`None`: the service's own).
    pub setup: Option<SetupMode>,
    files: Source,
}

impl RunRequest {
    /// Reads a request body: a JSON object in a task line's form (`runner`,
    /// `files`, `limits`, `env`, `image`, `setup`; `id` optional). Limits
    /// may only tighten `defaults` (the operator's, or a key's ceilings).
    pub fn parse(body: &[u8], defaults: &RunSpec) -> Result<Self, String> {
        let mut v: Value = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
        let Some(obj) = v.as_object_mut() else {
            return Err("body: expected a JSON object".into());
        };
        if let Some((field, why)) = NOT_FOR_RUNS.iter().find(|(f, _)| obj.contains_key(*f)) {
            return Err(format!("{field}: {why}"));
        }
        obj.entry("id").or_insert_with(|| Value::from("run"));
        // No folder can be named (refused above), so no base is needed.
        let task = parse_task(&v.to_string(), Path::new(""), defaults, false)
            .map_err(|(_, _, msg)| msg)?;
        debug_assert!(matches!(task.kind, Kind::Check));
        Ok(RunRequest {
            id: task.id,
            sample: task.sample,
            spec: task.spec,
            setup: task.setup,
            files: task.source,
        })
    }

    /// Writes the request's files to a new scratch folder (in `scratch`, or
    /// the system's temp folder) and points the spec at it; the folder goes
    /// when the guard is dropped.
    pub fn materialize(&mut self, scratch: Option<&Path>) -> Result<tempfile::TempDir, AgentError> {
        let (dir, root) = scratch::copy_in(&self.files, scratch)?;
        self.spec.workspace = root;
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<RunRequest, String> {
        RunRequest::parse(body.as_bytes(), &RunSpec::new("", "", "img"))
    }

    #[test]
    fn a_request_is_a_task_line_without_host_paths_or_models() {
        let r =
            parse(r#"{"runner":"pytest","files":{"a.py":"x"},"limits":{"timeout":"5s"}}"#).unwrap();
        assert_eq!(r.id, "run");
        assert_eq!(r.spec.limits.timeout, std::time::Duration::from_secs(5));
        for (body, says) in [
            (
                r#"{"runner":"x","workspace":"/etc"}"#,
                "cannot name a folder",
            ),
            (r#"{"runner":"x","task":"t"}"#, "does not ask a model"),
            (r#"{"runner":"x","files":{"../e":"x"}}"#, "../e"),
            (
                r#"{"runner":"x","limits":{"memory":"64g"}}"#,
                "limits.memory",
            ),
            (r#"[1]"#, "JSON object"),
            (r#"{"runner":"#, "body:"),
            (r#"{"files":{}}"#, "runner"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn materialized_files_land_in_a_scratch_folder_that_goes_with_its_guard() {
        let mut r = parse(r#"{"runner":"x","files":{"d/a.txt":"hi"}}"#).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let guard = r.materialize(Some(tmp.path())).unwrap();
        let file = r.spec.workspace.join("d/a.txt");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "hi");
        drop(guard);
        assert!(!file.exists());
    }
}

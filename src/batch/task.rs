//! Task lines: what a user may write, and the validated [`Task`] it becomes.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::repo::{report_at, RepoFields, TestIds};
use super::results::{task_key, TaskResult};
use super::BatchConfig;
use crate::agent::DEFAULT_MAX_ITERS;
use crate::config::keys::{self, Project};
use crate::config::overrides;
use crate::model::{ModelSettings, ProviderKind};
use crate::patch;
use crate::sandbox::{Command, RunSpec};

/// Longest test command a task may give: a command line is not a script
/// (the kernel refuses arguments far shorter than a tasks file's lines,
/// and every result repeats the command).
const MAX_RUNNER_BYTES: usize = 64 * 1024;

/// A task line as written by the user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    id: String,
    #[serde(default)]
    sample: u32,
    #[serde(default)]
    workspace: Option<RawWorkspace>,
    #[serde(default)]
    files: Option<BTreeMap<String, String>>,
    #[serde(alias = "test_cmd")]
    runner: Command,
    #[serde(default)]
    image: Option<String>,
    /// A profile by name: its image (unless `image` is given) and its
    /// language's set-up.
    #[serde(default)]
    profile: Option<String>,
    /// Repository tasks (see `repo.rs`): a repository at a commit, a
    /// candidate patch, the benchmark's test patch, the tests that decide.
    #[serde(default)]
    repo: Option<PathBuf>,
    #[serde(default)]
    base_commit: Option<String>,
    #[serde(default)]
    patch: Option<String>,
    #[serde(default)]
    test_patch: Option<String>,
    #[serde(default, alias = "FAIL_TO_PASS")]
    fail_to_pass: Option<TestIds>,
    #[serde(default, alias = "PASS_TO_PASS")]
    pass_to_pass: Option<TestIds>,
    /// Where the test command leaves its per-test report, relative to the
    /// workspace (found in the command when not given).
    #[serde(default)]
    test_results: Option<String>,
    /// Set by a converter (SWE-bench's files) on a task it could not make:
    /// the task's result is invalid, with this reason.
    #[serde(default)]
    unusable: Option<String>,
    #[serde(default)]
    limits: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    solution: Option<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    model: Option<ModelSettings>,
    #[serde(default)]
    max_iters: Option<u32>,
    /// Held-out tests: a folder (inside the tasks file's folder) or
    /// `{"files": {...}}`, laid over the workspace for the verdict.
    #[serde(default)]
    holdout: Option<RawWorkspace>,
    /// The install step of the set-up phase, or `false` for none. It runs
    /// with a test run's lockdown; the allowlist stays the operator's.
    #[serde(default)]
    setup: Option<RawSetup>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSetup {
    Command(String),
    Enabled(bool),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawWorkspace {
    Folder(PathBuf),
    Inline { files: BTreeMap<String, String> },
}

/// Where a task's files come from.
#[derive(Debug, Clone)]
pub(super) enum Source {
    Folder(PathBuf),
    Inline(BTreeMap<String, String>),
    Empty,
    /// A repository at a commit, checked out into the scratch folder.
    Repo(super::repo::RepoSource),
}

#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// Apply this reply, run the tests once.
    Solution(String),
    /// Run the repair loop.
    Loop {
        task: String,
        model: ModelSettings,
        max_iters: u32,
    },
    /// Just run the tests on the workspace.
    Check,
    /// Apply a candidate and a test patch, run, judge the named tests.
    Repo(super::repo::RepoCheck),
}

/// A validated task.
#[derive(Debug, Clone)]
pub(super) struct Task {
    pub(super) line: usize,
    pub(super) id: String,
    pub(super) sample: u32,
    pub(super) source: Source,
    pub(super) spec: RunSpec,
    pub(super) kind: Kind,
    /// Held-out tests, laid over the workspace for the verdict.
    pub(super) holdout: Option<Source>,
    /// The task's own set-up (install step or none), over the batch's.
    pub(super) setup: Option<crate::env::SetupMode>,
    /// The profile the task names (its set-up language, and its image
    /// when `image_from_profile`).
    pub(super) profile: Option<String>,
    /// The task gave no image: its profile's is used.
    pub(super) image_from_profile: bool,
}

/// A tasks file, read: the tasks to run, a result for each line that is not
/// a task, and how many lines were left out as done already.
pub(super) struct Listed {
    pub(super) tasks: Vec<Task>,
    pub(super) invalid: Vec<TaskResult>,
    pub(super) skipped: usize,
}

/// Reads a tasks file's lines. Blank lines and `#` comments are no tasks; a
/// line that is not one (bad JSON, not UTF-8, a duplicate id) is one invalid
/// result, not a bad file; a task whose key is in `done` is skipped.
pub(super) fn read_tasks(
    bytes: &[u8],
    base: &Path,
    cfg: &BatchConfig,
    done: &HashSet<String>,
) -> Listed {
    let mut tasks = Vec::new();
    let mut invalid = Vec::new();
    let mut seen = HashSet::new();
    let mut skipped = 0;
    for (i, raw_line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let result = match std::str::from_utf8(raw_line) {
            // A line that is not UTF-8 is one bad task, not a bad file.
            Err(_) => Err((None, 0, format!("line {line}: not valid UTF-8"))),
            Ok(l) => {
                let l = l.strip_suffix('\r').unwrap_or(l);
                if l.trim().is_empty() || l.trim_start().starts_with('#') {
                    continue;
                }
                let parsed = parse_task(l, base, &cfg.defaults, cfg.allow_task_overrides);
                let parsed = parsed
                    .and_then(|t| with_profile(t, cfg))
                    .map_err(|(id, sample, msg)| (id, sample, format!("line {line}: {msg}")));
                match parsed.map(|mut t| {
                    t.line = line;
                    t
                }) {
                    // No id on the duplicate's result: it must not take the
                    // place of the first line's (results are keyed by id).
                    Ok(t) if !seen.insert(task_key(&t.id, t.sample)) => Err((
                        None,
                        t.sample,
                        format!(
                            "line {line}: duplicate id {:?} with sample {}",
                            t.id, t.sample
                        ),
                    )),
                    other => other,
                }
            }
        };
        match result {
            Ok(t) if done.contains(&task_key(&t.id, t.sample)) => skipped += 1,
            Ok(t) => tasks.push(t),
            Err((id, sample, msg)) => {
                let r = TaskResult::invalid(line, id, sample, msg);
                if done.contains(&r.key()) {
                    skipped += 1;
                } else {
                    invalid.push(r);
                }
            }
        }
    }
    Listed {
        tasks,
        invalid,
        skipped,
    }
}

/// Gives a task that names a profile that profile's image (unless it named
/// an image); a name no profile has is the task's error.
fn with_profile(mut t: Task, cfg: &BatchConfig) -> Result<Task, (Option<String>, u32, String)> {
    if let Some(name) = &t.profile {
        let p = cfg
            .profiles
            .get(name)
            .map_err(|e| (Some(t.id.clone()), t.sample, format!("profile: {e}")))?;
        if t.image_from_profile {
            t.spec.image = p.image.clone();
        }
    }
    Ok(t)
}

/// One task line (without its line number, which the caller prefixes to
/// the error and sets on the task).
pub(super) fn parse_task(
    text: &str,
    base: &Path,
    defaults: &RunSpec,
    allow_overrides: bool,
) -> Result<Task, (Option<String>, u32, String)> {
    let raw: RawTask = serde_json::from_str(text).map_err(|e| salvage(text, &e))?;
    let bad = |msg: String| (Some(raw.id.clone()), raw.sample, msg);
    if let Some(why) = &raw.unusable {
        return Err(bad(why.clone()));
    }
    if raw.id.is_empty() {
        return Err(bad("id is empty".into()));
    }
    if raw.runner.is_empty() {
        return Err(bad("runner is empty".into()));
    }
    let runner_bytes = raw.runner.to_string().len();
    if runner_bytes > MAX_RUNNER_BYTES {
        return Err(bad(format!(
            "runner is {runner_bytes} bytes, over the {MAX_RUNNER_BYTES}-byte cap: put a long script in a file of the workspace and run that"
        )));
    }
    let holdout = raw
        .holdout
        .map(|h| holdout_source(h, base, allow_overrides))
        .transpose()
        .map_err(bad)?;
    let repo = RepoFields {
        repo: raw.repo,
        base_commit: raw.base_commit,
        patch: raw.patch,
        test_patch: raw.test_patch,
        fail_to_pass: raw.fail_to_pass,
        pass_to_pass: raw.pass_to_pass,
    };
    let (source, kind) = if repo.given() {
        let others = [
            ("workspace", raw.workspace.is_some()),
            ("files", raw.files.is_some()),
            ("solution", raw.solution.is_some()),
            ("task", raw.task.is_some()),
            ("model", raw.model.is_some()),
            ("holdout", holdout.is_some()),
        ];
        if let Some((f, _)) = others.iter().find(|(_, given)| *given) {
            return Err(bad(format!(
                "{f} cannot be given with repo: a repository task checks a patch on the repository's own tree"
            )));
        }
        repo.into_task(base, allow_overrides).map_err(bad)?
    } else {
        let source =
            workspace_source(raw.workspace, raw.files, base, allow_overrides).map_err(bad)?;
        let kind = kind(
            (raw.solution, raw.task, raw.model),
            raw.max_iters,
            base,
            allow_overrides,
        )
        .map_err(bad)?;
        (source, kind)
    };
    let mut spec = defaults.clone();
    if let Some(at) = report_at(&kind, raw.test_results, &raw.runner).map_err(bad)? {
        spec.junit = at;
    }
    spec.command = raw.runner;
    let image_given = raw.image.is_some();
    if let Some(img) = raw.image {
        spec.image = img;
    }
    if let Some(over) = raw.limits {
        spec.limits = overrides::apply(&defaults.limits, &over, allow_overrides)
            .map_err(|e| bad(e.to_string()))?;
    }
    if let Some(key) = raw.env.keys().find(|k| !crate::config::valid_env_key(k)) {
        return Err(bad(format!(
            "env: {key:?} is not a valid variable name (letters, digits and _, not starting with a digit)"
        )));
    }
    spec.env.extend(raw.env);
    spec.labels.push(("autodev.task".into(), raw.id.clone()));
    let setup = setup_mode(raw.setup).map_err(bad)?;
    Ok(Task {
        line: 0,
        id: raw.id,
        sample: raw.sample,
        source,
        spec,
        kind,
        holdout,
        setup,
        image_from_profile: raw.profile.is_some() && !image_given,
        profile: raw.profile,
    })
}

/// A task line's `setup`: the batch's (absent or `true`), none (`false`),
/// or its own command.
fn setup_mode(raw: Option<RawSetup>) -> Result<Option<crate::env::SetupMode>, String> {
    Ok(match raw {
        None | Some(RawSetup::Enabled(true)) => None,
        Some(RawSetup::Enabled(false)) => Some(crate::env::SetupMode::Off),
        Some(RawSetup::Command(c)) if c.trim().is_empty() => {
            return Err("setup is empty: give a command, or false for none".into())
        }
        Some(RawSetup::Command(c)) if c.len() > MAX_RUNNER_BYTES => {
            return Err(format!("setup is over the {MAX_RUNNER_BYTES}-byte cap"))
        }
        Some(RawSetup::Command(c)) => Some(crate::env::SetupMode::Command(c)),
    })
}

/// A line that is not a task: its id and sample, if they can be read, so
/// the error line can be matched to its task.
fn salvage(text: &str, e: &serde_json::Error) -> (Option<String>, u32, String) {
    let v: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let id = v
        .as_ref()
        .and_then(|v| v.get("id"))
        .and_then(|i| i.as_str())
        .map(str::to_string);
    let sample = v
        .as_ref()
        .and_then(|v| v.get("sample"))
        .and_then(|s| s.as_u64())
        .unwrap_or(0) as u32;
    (id, sample, e.to_string())
}

/// A task's held-out tests: a folder confined to the tasks file's, or files.
fn holdout_source(h: RawWorkspace, base: &Path, allow: bool) -> Result<Source, String> {
    match h {
        RawWorkspace::Folder(p) => {
            let p = confine(base, &p, "holdout", allow)?;
            if !p.is_dir() {
                return Err(format!("holdout {} is not a folder", p.display()));
            }
            Ok(Source::Folder(p))
        }
        RawWorkspace::Inline { files } => {
            for path in files.keys() {
                patch::apply::confine(path)
                    .map_err(|(_, why)| format!("holdout file {path:?}: {why}"))?;
            }
            Ok(Source::Inline(files))
        }
    }
}

/// A task's workspace: a folder confined to the tasks file's, files
/// (checked as a reply's would be), or nothing.
fn workspace_source(
    workspace: Option<RawWorkspace>,
    files: Option<BTreeMap<String, String>>,
    base: &Path,
    allow: bool,
) -> Result<Source, String> {
    match (workspace, files) {
        (Some(_), Some(_)) => Err("give either workspace or files, not both".into()),
        (Some(RawWorkspace::Folder(p)), None) => {
            let p = confine(base, &p, "workspace", allow)?;
            if !p.is_dir() {
                return Err(format!("workspace {} is not a folder", p.display()));
            }
            Ok(Source::Folder(p))
        }
        (Some(RawWorkspace::Inline { files }), None) | (None, Some(files)) => {
            if let Some((a, b)) = folder_conflict(&files) {
                return Err(format!(
                    "files {a:?} and {b:?} conflict: {a:?} would have to be a file and a folder"
                ));
            }
            for (path, content) in &files {
                let rel = patch::apply::confine(path)
                    .map_err(|(_, why)| format!("file {path:?}: {why}"))?;
                if patch::apply::plants_git_head(&rel, content) {
                    return Err(format!(
                        "file {path:?}: a git HEAD file is protected (it would make a repository)"
                    ));
                }
            }
            Ok(Source::Inline(files))
        }
        (None, None) => Ok(Source::Empty),
    }
}

/// What a task does: check a solution, run a repair loop (whose model
/// settings a task line may not point elsewhere), or run the tests as they are.
fn kind(
    (solution, task, model): (Option<String>, Option<String>, Option<ModelSettings>),
    max_iters: Option<u32>,
    base: &Path,
    allow: bool,
) -> Result<Kind, String> {
    match (solution, task) {
        (Some(_), Some(_)) => Err("give either solution or task, not both".into()),
        (Some(s), None) => Ok(Kind::Solution(s)),
        (None, Some(t)) => {
            let mut model = model.unwrap_or_default();
            if let Some(r) = model.replay.take() {
                model.replay = Some(confine(base, &r, "model.replay", allow)?);
            }
            // A replay is no destination; any other provider is one.
            let provider = model.provider.filter(|p| *p != ProviderKind::Replay);
            for (field, given) in [
                ("model.provider", provider.is_some()),
                ("model.base_url", model.base_url.is_some()),
                ("model.name", model.name.is_some()),
            ] {
                if given {
                    untrusted(field, 0.0, 0.0, allow)?;
                }
            }
            model.validate().map_err(|e| format!("model: {e}"))?;
            let max_iters = max_iters.unwrap_or(DEFAULT_MAX_ITERS);
            untrusted(
                "max_iters",
                f64::from(max_iters),
                f64::from(DEFAULT_MAX_ITERS),
                allow,
            )?;
            Ok(Kind::Loop {
                task: t,
                model,
                max_iters,
            })
        }
        (None, None) if model.is_some() => Err(
            "model is given but there is no task for it: add \"task\", or drop \"model\"".into(),
        ),
        (None, None) => Ok(Kind::Check),
    }
}

/// Two inline paths of which one would have to be the other's folder
/// (`d` and `d/e`), found before any scratch folder exists.
fn folder_conflict(files: &BTreeMap<String, String>) -> Option<(String, String)> {
    let clean: Vec<(PathBuf, &String)> = files
        .keys()
        .filter_map(|k| patch::apply::confine(k).ok().map(|p| (p, k)))
        .collect();
    clean.iter().find_map(|(p, k)| {
        clean
            .iter()
            .find(|(q, _)| q != p && q.starts_with(p))
            .map(|(_, l)| ((*k).clone(), (*l).clone()))
    })
}

/// Checks a task line's `field` against the rule a project file has for the
/// same setting (`config::keys`): a refused setting needs the operator's
/// `--allow-task-overrides`, a limit may only go down from `operator`.
fn untrusted(field: &str, value: f64, operator: f64, allow: bool) -> Result<(), String> {
    if allow {
        return Ok(());
    }
    match keys::for_task_field(field).map(|k| k.project) {
        Some(Project::Forbidden(why)) => Err(format!(
            "{field} cannot be set by a task line ({why}): remove it, or pass --allow-task-overrides if you trust this tasks file"
        )),
        Some(Project::Tighten(_)) if value > operator => Err(format!(
            "{field} ({value}) is more than the operator's ({operator}): a task may only lower it; pass --allow-task-overrides to let tasks raise it"
        )),
        _ => Ok(()),
    }
}

/// A path named by a task line, resolved against the tasks file's folder
/// and kept inside it: no absolute path, no `..`, no link that leads out
/// (a published tasks file must not pick host folders to read or send),
/// unless the operator allows overrides.
pub(super) fn confine(base: &Path, p: &Path, field: &str, allow: bool) -> Result<PathBuf, String> {
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    if allow {
        return Ok(base.join(p));
    }
    let hint = "pass --allow-task-overrides to allow paths outside it";
    let plain = p.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if !plain {
        return Err(format!(
            "{field} {}: must be a relative path inside the tasks file's folder (no absolute path, no ..); {hint}",
            p.display()
        ));
    }
    let joined = base.join(p);
    // Links are resolved on both sides, so one that points out is caught.
    let (Ok(real_base), Ok(real)) = (base.canonicalize(), joined.canonicalize()) else {
        return Ok(joined);
    };
    if !real.starts_with(&real_base) {
        return Err(format!(
            "{field} {}: leads outside the tasks file's folder (through a link, to {}); {hint}",
            p.display(),
            real.display()
        ));
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn defaults() -> RunSpec {
        RunSpec::new("", "", "img")
    }

    #[test]
    fn task_lines_are_validated_with_line_numbers() {
        let base = Path::new("/nonexistent");
        let d = defaults();
        let err = |l: &str| parse_task(l, base, &d, false).unwrap_err().2;
        assert!(err("{").contains("EOF"));
        assert!(err(r#"{"id":"a","runner":""}"#).contains("runner is empty"));
        assert!(err(r#"{"id":"a","runner":"x","files":{"../e":"x"}}"#).contains("../e"));
        assert!(err(r#"{"id":"a","runner":"x","workspace":"nope"}"#).contains("not a folder"));
        assert!(err(r#"{"id":"a","runner":"x","limits":{"memory":5}}"#).contains("--memory"));
        assert!(err(r#"{"id":"a","runner":"x","bogus":1}"#).contains("bogus"));
        let (id, _, _) = parse_task(r#"{"id":"keep","runner":5}"#, base, &d, false).unwrap_err();
        assert_eq!(id.as_deref(), Some("keep"));
        let t = parse_task(
            r#"{"id":"a","runner":"pytest","files":{"a.py":"x"},"limits":{"timeout":"5s"},"env":{"K":"V"}}"#,
            base,
            &d,
            false,
        )
        .unwrap();
        assert_eq!(t.spec.limits.timeout, Duration::from_secs(5));
        assert_eq!(
            t.spec.limits.memory,
            crate::config::Limits::default().memory
        );
        assert!(err(r#"{"id":"a","runner":"x","limits":{"memory":"1g"}}"#)
            .contains("--allow-task-overrides"));
        assert!(err(r#"{"id":"a","runner":"x","env":{"A B":"1"}}"#).contains("A B"));
        let argv = parse_task(
            r#"{"id":"a","runner":["sh","-c","exit 7"]}"#,
            base,
            &d,
            false,
        )
        .unwrap();
        assert_eq!(
            argv.spec.command,
            Command::Argv(vec!["sh".into(), "-c".into(), "exit 7".into()])
        );
        assert_eq!(t.spec.env, [("K".to_string(), "V".to_string())]);
    }
}

#[cfg(test)]
mod untrusted_tests {
    use super::*;

    fn parse(l: &str, base: &Path, allow: bool) -> Result<Task, String> {
        parse_task(l, base, &RunSpec::new("", "", "img"), allow).map_err(|e| e.2)
    }

    #[test]
    fn task_paths_stay_in_the_tasks_folder() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("tasks");
        std::fs::create_dir_all(base.join("ws")).unwrap();
        std::fs::create_dir_all(root.path().join("secret")).unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), base.join("out")).unwrap();
        let abs = root.path().join("secret");
        for ws in [
            abs.display().to_string(),
            "../secret".into(),
            "ws/../../secret".into(),
        ] {
            let line = format!(r#"{{"id":"a","runner":"x","workspace":{ws:?}}}"#);
            let e = parse(&line, &base, false).unwrap_err();
            assert!(e.contains("inside the tasks file's folder"), "{e}");
            assert!(parse(&line, &base, true).is_ok());
        }
        let e = parse(r#"{"id":"a","runner":"x","workspace":"out"}"#, &base, false).unwrap_err();
        assert!(e.contains("through a link"), "{e}");
        assert!(parse(r#"{"id":"a","runner":"x","workspace":"ws"}"#, &base, false).is_ok());
        let e = parse(
            r#"{"id":"a","runner":"x","task":"t","model":{"replay":"/etc/passwd"}}"#,
            &base,
            false,
        )
        .unwrap_err();
        assert!(e.contains("model.replay"), "{e}");
    }

    #[test]
    fn task_lines_cannot_choose_the_models_destination_or_cost() {
        let base = Path::new("/nonexistent");
        for (line, field) in [
            (
                r#"{"id":"a","runner":"x","task":"t","model":{"provider":"openai","base_url":"http://127.0.0.1:9/v1"}}"#,
                "model.provider",
            ),
            (
                r#"{"id":"a","runner":"x","task":"t","model":{"base_url":"http://127.0.0.1:9/v1"}}"#,
                "model.base_url",
            ),
            (
                r#"{"id":"a","runner":"x","task":"t","model":{"name":"big"}}"#,
                "model.name",
            ),
            (
                r#"{"id":"a","runner":"x","task":"t","max_iters":1000000}"#,
                "max_iters",
            ),
        ] {
            let e = parse(line, base, false).unwrap_err();
            assert!(
                e.contains(field) && e.contains("--allow-task-overrides"),
                "{e}"
            );
            assert!(parse(line, base, true).is_ok(), "{line}");
        }
        let t = parse(
            r#"{"id":"a","runner":"x","task":"t","max_iters":2,"model":{"provider":"replay","replies":["r"]}}"#,
            base,
            false,
        )
        .unwrap();
        assert!(matches!(t.kind, Kind::Loop { max_iters: 2, .. }));
    }

    #[test]
    fn inline_files_that_need_a_file_to_be_a_folder_are_refused_up_front() {
        let e = parse(
            r#"{"id":"a","runner":"x","files":{"d":"x","d/e":"y"}}"#,
            Path::new("/nonexistent"),
            false,
        )
        .unwrap_err();
        assert!(e.contains("conflict") && !e.contains("scratch"), "{e}");
    }

    #[test]
    fn a_runner_is_a_command_not_a_script() {
        let base = Path::new("/nonexistent");
        let line = serde_json::json!({"id": "a", "runner": "x".repeat(MAX_RUNNER_BYTES + 1)});
        let e = parse(&line.to_string(), base, true).unwrap_err();
        assert!(e.contains("cap"), "{e}");
    }
}

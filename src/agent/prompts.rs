//! What the model is told: the rules, and the requests built from a run's
//! state (kept apart from the loop, which decides when to ask).

use super::guard::Change;
use super::{AgentConfig, AgentError};
use crate::patch::ApplyReport;
use crate::sandbox::{Outcome, Verdict};
use crate::text::cut_middle;
use crate::workspace;

/// Lines from which `auto` asks for edits instead of whole files.
pub const DEFAULT_WHOLE_FILE_LINES: usize = 200;

/// How the model is asked to send its changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EditFormat {
    /// Whole files (`PATCH::`).
    Whole,
    /// Search/replace edits (`EDIT::`), whole files for new ones.
    Blocks,
    /// Unified diffs (`DIFF::`), whole files for new ones.
    Diff,
    /// Whole files under [`DEFAULT_WHOLE_FILE_LINES`] lines, edits above.
    #[default]
    Auto,
}

impl std::str::FromStr for EditFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "whole" => Ok(EditFormat::Whole),
            "blocks" => Ok(EditFormat::Blocks),
            "diff" => Ok(EditFormat::Diff),
            "auto" => Ok(EditFormat::Auto),
            _ => Err(format!(
                "{s:?} is not an edit format: whole, blocks, diff or auto"
            )),
        }
    }
}

const WHOLE: &str = "PATCH::relative/path/to/file\n<the complete file content>\nENDPATCH\n";
const EDIT: &str = "EDIT::relative/path/to/file\n<<<<<<< SEARCH\n<the exact lines to change, \
copied from the file, with a few lines around them so they occur once>\n=======\n<the lines that \
replace them>\n>>>>>>> REPLACE\nENDEDIT\n(several SEARCH/REPLACE pairs may follow each other in \
one EDIT block; they apply in order)\n";
const DIFF: &str = "DIFF::\n--- a/relative/path/to/file\n+++ b/relative/path/to/file\n@@ -LINE,COUNT \
+LINE,COUNT @@\n<context lines start with a space, removed lines with -, added lines with +>\nENDDIFF\n";

/// How to send changes, in the words of `format`.
fn how(format: EditFormat) -> String {
    let paths = "Paths are relative to the project root. Never use absolute paths or `..`.";
    match format {
        EditFormat::Whole => format!(
            "Return only PATCH blocks (no explanation). Each PATCH block holds one whole file, in this exact form:\n{WHOLE}{paths}"
        ),
        EditFormat::Blocks => format!(
            "Return only EDIT and PATCH blocks (no explanation). Change an existing file with an EDIT block:\n{EDIT}\
Each SEARCH must match the file exactly once. Create a new file with a PATCH block holding it whole:\n{WHOLE}{paths}"
        ),
        EditFormat::Diff => format!(
            "Return only DIFF and PATCH blocks (no explanation). Change existing files with a unified diff:\n{DIFF}\
Each hunk's context and removed lines must be exactly the file's. Create a new file with a PATCH block holding it whole:\n{WHOLE}{paths}"
        ),
        EditFormat::Auto => format!(
            "Return only PATCH and EDIT blocks (no explanation). Send a new file, or one of fewer than \
{DEFAULT_WHOLE_FILE_LINES} lines, whole in a PATCH block:\n{WHOLE}Change a longer file with an EDIT block \
(never resend it whole):\n{EDIT}Each SEARCH must match the file exactly once. {paths}"
        ),
    }
}

/// Rules for the first request.
pub fn coder_rules(format: EditFormat) -> String {
    format!(
        "You are an expert software engineer working in a sandbox. Propose initial minimal codebase + tests. {}",
        how(format)
    )
}

/// Rules for every repair request.
pub fn reviewer_rules(format: EditFormat) -> String {
    format!(
        "You are an expert reviewer fixing a project whose tests fail. Read the failure and the current files, \
find the cause, and fix the code (not the tests, unless they are wrong). {}",
        how(format)
    )
}

/// The repair request: what went wrong in plain words, the regression
/// first if there is one, the failing tests, the refused blocks, the
/// failure output and the files.
pub(super) fn repair(
    cfg: &AgentConfig,
    o: &Outcome,
    report: &ApplyReport,
    change: Option<&Change>,
) -> Result<String, AgentError> {
    let (refused, notes) = (&report.refused, &report.notes);
    let limits = &cfg.sandbox.limits;
    let what = match o.verdict {
        Verdict::TimedOut => format!(
            "the tests were killed after the {} wall-clock limit: look for infinite loops, deadlocks, \
             slow algorithms or reads from standard input",
            humantime::format_duration(limits.timeout)
        ),
        Verdict::OomKilled => format!(
            "a process was killed for using more than the {} MiB memory limit: reduce memory use",
            limits.memory >> 20
        ),
        Verdict::NoTests => format!(
            "the test command exited 0 but nothing was tested ({}): write the code and its tests as PATCH blocks, where the test command finds them",
            o.tests_note.as_deref().unwrap_or("its report holds no test")
        ),
        Verdict::Unverified => format!(
            "the test command exited 0 but its test report never came ({}): do not change how the tests are run or reported",
            o.tests_note.as_deref().unwrap_or("no report")
        ),
        Verdict::Failed if o.exit_code == Some(0) => format!(
            "the test command exited 0 but tests failed ({})",
            o.tests_note.as_deref().unwrap_or("see the report")
        ),
        _ => format!(
            "the test command exited with code {}",
            o.exit_code.map_or_else(|| "?".into(), |c| c.to_string())
        ),
    };
    let mut failure = String::new();
    failure.push_str(&o.stderr.text);
    if !o.stderr.text.is_empty() && !o.stdout.text.is_empty() {
        failure.push('\n');
    }
    failure.push_str(&o.stdout.text);
    let mut prompt = format!(
        "Task:\n{}\n\nTest command: {}\n\nThe tests did not pass: {what}.\n",
        cfg.task, cfg.runner
    );
    if let Some(c) = change.filter(|c| !c.broke.is_empty()) {
        prompt.push_str(&format!(
            "\nREGRESSION: your last change broke these tests, which passed before: {}. Fix them without undoing what works.\n",
            c.broke.join(", ")
        ));
    }
    if let Some(c) = change.filter(|c| !c.missing.is_empty()) {
        prompt.push_str(&format!(
            "\nREGRESSION: these tests ran before and are missing now (an import or syntax error hides them, or they were removed): {}. Make them run again.\n",
            c.missing.join(", ")
        ));
    }
    if let Some(t) = o.tests.as_ref().filter(|t| !t.failing.is_empty()) {
        prompt.push_str(&format!(
            "\n{} of {} tests failed or errored:\n",
            t.failed + t.errors,
            t.total
        ));
        for f in &t.failing {
            prompt.push_str(&format!("- {}: {}\n", f.name, f.message));
        }
    }
    if !refused.is_empty() {
        prompt.push_str("\nThese blocks of your last reply were NOT applied:\n");
        for r in refused {
            prompt.push_str(&format!("- {:?}: {}\n", r.path, r.detail));
        }
    }
    if !notes.is_empty() {
        prompt.push_str("\nApplied, with a note:\n");
        for n in notes {
            prompt.push_str(&format!("- {n}\n"));
        }
    }
    let failure = cut_middle(&failure, cfg.failure_chars);
    let naming = format!("{failure}\n{prompt}");
    prompt.push_str(&format!(
        "\nFailure output (stderr, then stdout):\n{failure}\n\nCurrent files:\n{}",
        files(cfg, &naming, &report.reads)?
    ));
    Ok(prompt)
}

/// The workspace for a prompt: whole when it fits the budget, else what
/// `naming` names, what the model asked for, and the map.
fn files(cfg: &AgentConfig, naming: &str, reads: &[String]) -> Result<String, AgentError> {
    let focus = workspace::Focus { naming, reads };
    Ok(workspace::prompt_context(
        &cfg.workspace,
        &cfg.sandbox.copy,
        cfg.context_chars,
        focus,
    )?)
}

/// The first request: the task and the files it names (or all of them).
pub(super) fn initial(cfg: &AgentConfig) -> Result<String, AgentError> {
    let context = files(cfg, &cfg.task, &[])?;
    Ok(format!(
        "Task:\n{}\n\nTest command (run in the project root): {}\n\nCurrent files:\n{}",
        cfg.task,
        cfg.runner,
        if context.is_empty() {
            "(none yet)\n"
        } else {
            &context
        }
    ))
}

/// The request after the visible tests passed and the held-out ones did
/// not: the task, how many held-out tests failed, and the files; nothing of
/// the held-out tests themselves.
pub(super) fn holdout_failed(cfg: &AgentConfig, told: &str) -> Result<String, AgentError> {
    Ok(format!(
        "Task:\n{}\n\nTest command: {}\n\nThe tests did not pass: {told}.\n\nCurrent files:\n{}",
        cfg.task,
        cfg.runner,
        // Named by the task only: the held-out tests' output is never shown.
        files(cfg, &cfg.task, &[])?
    ))
}

/// The request after a reply without a single block: the files it asked
/// to read, if that is all it did.
pub(super) fn no_patch(cfg: &AgentConfig, reads: &[String]) -> Result<String, AgentError> {
    let said = if reads.is_empty() {
        "Your last reply held no PATCH, EDIT or DIFF block, so nothing was written and nothing was tested. Reply with your changes as blocks."
    } else {
        "Your last reply only asked to read files: they are below. Nothing was written or tested. Reply with your changes as blocks."
    };
    Ok(format!(
        "Task:\n{}\n\nTest command (run in the project root): {}\n\n{said}\n\nCurrent files:\n{}",
        cfg.task,
        cfg.runner,
        match files(cfg, &cfg.task, reads)? {
            c if c.is_empty() => "(none yet)\n".to_string(),
            c => c,
        }
    ))
}

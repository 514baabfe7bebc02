//! What the model is told: the rules, and the requests built from a run's
//! state (kept apart from the loop, which decides when to ask).

use super::guard::Change;
use super::{AgentConfig, AgentError};
use crate::patch::Refusal;
use crate::sandbox::{Outcome, Verdict};
use crate::text::cut_middle;
use crate::workspace;

/// Rules for the first request.
pub const CODER_RULES: &str = "You are an expert software engineer working in a sandbox. \
Propose initial minimal codebase + tests. Return only PATCH blocks (no explanation).\n\
Each PATCH block holds one whole file, in this exact form:\n\
PATCH::relative/path/to/file\n<the complete file content>\nENDPATCH\n\
Paths are relative to the project root. Never use absolute paths or `..`.";

/// Rules for every repair request.
pub const REVIEWER_RULES: &str = "You are an expert reviewer fixing a project whose tests fail. \
Read the failure and the current files, find the cause, and fix the code (not the tests, unless \
they are wrong). Return ONLY PATCH blocks, each holding one whole file:\n\
PATCH::relative/path/to/file\n<the complete file content>\nENDPATCH\n\
Paths are relative to the project root. Never use absolute paths or `..`.";

/// The repair request: what went wrong in plain words, the regression
/// first if there is one, the failing tests, the refused blocks, the
/// failure output and the files.
pub(super) fn repair(
    cfg: &AgentConfig,
    o: &Outcome,
    refused: &[Refusal],
    change: Option<&Change>,
) -> Result<String, AgentError> {
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
        prompt.push_str("\nThese PATCH blocks of your last reply were NOT applied:\n");
        for r in refused {
            prompt.push_str(&format!("- {:?}: {}\n", r.path, r.detail));
        }
    }
    prompt.push_str(&format!(
        "\nFailure output (stderr, then stdout):\n{}\n\nCurrent files:\n{}",
        cut_middle(&failure, cfg.failure_chars),
        workspace::file_context(&cfg.workspace, &cfg.sandbox.copy, cfg.context_chars)?
    ));
    Ok(prompt)
}

/// The request after the visible tests passed and the held-out ones did
/// not: the task, how many held-out tests failed, and the files; nothing of
/// the held-out tests themselves.
pub(super) fn holdout_failed(cfg: &AgentConfig, told: &str) -> Result<String, AgentError> {
    Ok(format!(
        "Task:\n{}\n\nTest command: {}\n\nThe tests did not pass: {told}.\n\nCurrent files:\n{}",
        cfg.task,
        cfg.runner,
        workspace::file_context(&cfg.workspace, &cfg.sandbox.copy, cfg.context_chars)?
    ))
}

/// The request after a reply without a single PATCH block.
pub(super) fn no_patch(cfg: &AgentConfig) -> Result<String, AgentError> {
    Ok(format!(
        "Task:\n{}\n\nTest command (run in the project root): {}\n\nYour last reply held no PATCH block, so nothing was written and nothing was tested. Reply with the files as PATCH blocks.\n\nCurrent files:\n{}",
        cfg.task,
        cfg.runner,
        match workspace::file_context(&cfg.workspace, &cfg.sandbox.copy, cfg.context_chars)? {
            c if c.is_empty() => "(none yet)\n".to_string(),
            c => c,
        }
    ))
}

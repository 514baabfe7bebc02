//! A batch's files, opened before any task runs: the tasks (a file, or
//! `-` for standard input), and the results file, continued with
//! `--resume` or new, and never the tasks file itself.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::results::{read_results, repair_tail, TaskResult, TaskVerdict};
use super::{BatchConfig, BatchError};

/// What a batch reads and writes.
pub(super) struct Inputs {
    /// The tasks file's bytes.
    pub(super) bytes: Vec<u8>,
    /// The folder task paths are relative to.
    pub(super) base: PathBuf,
    /// The keys of tasks the results file already holds (`--resume`).
    pub(super) done: HashSet<String>,
    /// The results file, open for appending.
    pub(super) out: File,
}

/// Reads the tasks and opens the results file, or says why not.
pub(super) fn open(cfg: &BatchConfig) -> Result<Inputs, BatchError> {
    // `-` is standard input, as for most tools that read a file.
    let from_stdin = cfg.tasks == Path::new("-");
    let bytes = if from_stdin {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map(|_| b)
    } else {
        std::fs::read(&cfg.tasks)
    }
    .map_err(|source| BatchError::Io {
        op: "reading tasks file",
        path: cfg.tasks.clone(),
        source,
    })?;
    if cfg.out.is_dir() {
        return Err(BatchError::Io {
            op: "cannot write results to",
            path: cfg.out.clone(),
            source: std::io::Error::other("it is a folder: give --out a file path"),
        });
    }
    if same_file(&cfg.tasks, &cfg.out) {
        return Err(BatchError::Io {
            op: "refusing to write results into",
            path: cfg.out.clone(),
            source: std::io::Error::other("it is the tasks file: give --out another file"),
        });
    }
    let base = cfg.base.clone().unwrap_or_else(|| {
        cfg.tasks
            .parent()
            .filter(|_| !from_stdin)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    });

    let mut done: HashSet<String> = HashSet::new();
    if cfg.resume {
        repair_tail(&cfg.out)?;
        // A sandbox error says nothing about the task: a resume runs it
        // again, as it does any verdict in `rerun`. The new line supersedes
        // the old one (see `read_results`).
        done.extend(
            read_results(&cfg.out)?
                .iter()
                .filter(|r| {
                    r.verdict != TaskVerdict::SandboxError && !cfg.rerun.contains(&r.verdict)
                })
                .map(TaskResult::key),
        );
    } else if cfg.out.exists()
        && std::fs::metadata(&cfg.out)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    {
        // Appending a second run's lines to a first run's would double-count.
        return Err(BatchError::ResultsExist(cfg.out.clone()));
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.out)
        .map_err(|source| BatchError::Io {
            op: "opening results file",
            path: cfg.out.clone(),
            source,
        })?;
    Ok(Inputs {
        bytes,
        base,
        done,
        out,
    })
}

/// Whether two paths name one file (through links or other spellings).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

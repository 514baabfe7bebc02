//! Unified diffs (`diff -u`, `git diff`) applied to a workspace by
//! autodev itself, with the same confinement as whole-file blocks.
//!
//! Grammar read: optional `diff --git a/X b/Y` headers with their extended
//! lines (`new file mode`, `deleted file mode`, `rename from`/`rename to`,
//! `index`, mode changes), then `--- a/X` / `+++ b/Y` and hunks
//! `@@ -l,s +l,s @@` whose lines start with ` `, `-`, `+` or
//! `\ No newline at end of file`. Paths lose their first component (`-p1`,
//! as `git apply` does); `/dev/null` marks a created or deleted file.
//!
//! Not done, on purpose: fuzz (a hunk whose context differs is refused,
//! never fitted), binary patches, symlinks (mode 120000), copies. A hunk
//! may sit at another line than its header says (files drift), searched
//! outwards from there, never before the previous hunk.
//!
//! A diff applies whole or not at all: every file's new content is worked
//! out in memory first, and nothing is written when any hunk fails. Every
//! path goes through [`confine`] and is reached
//! through real folders only; a result over the size cap is refused.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::apply::{confine, existing_file, write_file};

/// Largest diff read, in bytes.
pub const MAX_DIFF_BYTES: usize = 16 * 1024 * 1024;

/// Why a diff was not applied: which file, which hunk, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffError {
    /// The file as the diff names it (empty before any file header).
    pub path: String,
    /// 1-based hunk of that file, when one is to blame.
    pub hunk: Option<usize>,
    /// 1-based line of the diff where the trouble is.
    pub line: usize,
    /// What is wrong.
    pub detail: String,
}

impl fmt::Display for DiffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.hunk, self.path.is_empty()) {
            (Some(h), _) => write!(
                f,
                "{}: hunk {h} (diff line {}): {}",
                self.path, self.line, self.detail
            ),
            (None, false) => write!(
                f,
                "{} (diff line {}): {}",
                self.path, self.line, self.detail
            ),
            (None, true) => write!(f, "diff line {}: {}", self.line, self.detail),
        }
    }
}

impl std::error::Error for DiffError {}

/// One file's part of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// The path before (`None`: the file is created).
    pub old: Option<String>,
    /// The path after (`None`: the file is deleted).
    pub new: Option<String>,
    /// Mode of a created file (`100755` makes it executable).
    pub new_mode: Option<u32>,
    /// Hunks in order.
    pub hunks: Vec<Hunk>,
    /// 1-based line of the diff where this file starts.
    pub line: usize,
}

/// One `@@` hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// 1-based first line of the old side (0 for an empty old side).
    pub old_start: usize,
    /// Old side, lines without their `\n`.
    pub old: Vec<String>,
    /// New side, lines without their `\n`.
    pub new: Vec<String>,
    /// The old side's last line had no newline.
    pub old_no_eol: bool,
    /// The new side's last line has no newline.
    pub new_no_eol: bool,
    /// 1-based line of the `@@` header.
    pub line: usize,
}

/// What applying a diff changed, by path relative to the workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Files written (created or changed).
    pub written: Vec<String>,
    /// Files removed.
    pub removed: Vec<String>,
}

impl Applied {
    /// Every path touched.
    pub fn len(&self) -> usize {
        self.written.len() + self.removed.len()
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `text` holds no change at all (empty, or only blank lines).
pub fn is_empty_diff(text: &str) -> bool {
    text.trim().is_empty()
}

/// Reads a unified diff. A file header without hunks is allowed only for
/// a rename, a creation or a deletion of an empty file.
pub fn parse(text: &str) -> Result<Vec<FileDiff>, DiffError> {
    let err = |path: &str, line: usize, detail: String| DiffError {
        path: path.to_string(),
        hunk: None,
        line,
        detail,
    };
    if text.len() > MAX_DIFF_BYTES {
        return Err(err(
            "",
            1,
            format!(
                "the diff is {} bytes, over the {MAX_DIFF_BYTES}-byte cap",
                text.len()
            ),
        ));
    }
    let lines: Vec<&str> = text.split('\n').collect();
    let mut files: Vec<FileDiff> = Vec::new();
    let mut git: Option<GitHeader> = None;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let n = i + 1;
        if let Some(rest) = l.strip_prefix("diff --git ") {
            if let Some(g) = git.take() {
                files.push(g.into_file()?);
            }
            git = Some(GitHeader::new(rest, n));
            i += 1;
        } else if l.starts_with("GIT binary patch") || l.starts_with("Binary files ") {
            let path = git.as_ref().map(|g| g.display()).unwrap_or_default();
            return Err(err(
                &path,
                n,
                "binary patches are not applied; send the file whole".into(),
            ));
        } else if let Some(g) = git.as_mut().filter(|_| !l.starts_with("--- ")) {
            g.extended(l, n)?;
            i += 1;
        } else if l.starts_with("--- ") && lines.get(i + 1).is_some_and(|m| m.starts_with("+++ ")) {
            let mut f = FileDiff {
                old: side(&l[4..]),
                new: side(&lines[i + 1][4..]),
                new_mode: None,
                hunks: Vec::new(),
                line: n,
            };
            if let Some(g) = git.take() {
                f.new_mode = g.new_mode;
                f.line = g.line;
                if g.rename.is_some() && (f.old != g.rename_from() || f.new != g.rename_to()) {
                    return Err(err(
                        &g.display(),
                        n,
                        "the --- and +++ paths disagree with the rename lines".into(),
                    ));
                }
            }
            i += 2;
            let label = f.new.clone().or_else(|| f.old.clone()).unwrap_or_default();
            while i < lines.len() && lines[i].starts_with("@@") {
                let (h, next) = hunk(&lines, i).map_err(|mut e| {
                    e.path = label.clone();
                    e.hunk = Some(f.hunks.len() + 1);
                    e
                })?;
                f.hunks.push(h);
                i = next;
            }
            if f.hunks.is_empty() {
                return Err(err(&label, n, "a file header with no hunk".into()));
            }
            // A changed line right after the last hunk means the counts of
            // a header are short (`-- ` is the signature of a mailed patch).
            if let Some(l) = lines.get(i).filter(|l| {
                l.starts_with('+') || (l.starts_with('-') && **l != "-- " && !l.starts_with("--- "))
            }) {
                return Err(DiffError {
                    path: label,
                    hunk: Some(f.hunks.len()),
                    line: i + 1,
                    detail: format!(
                        "line {l:?} follows the hunk but its header's counts do not include it; the counts must match its lines"
                    ),
                });
            }
            files.push(f);
        } else {
            // Commit messages, `index` lines of plain diffs, blank lines:
            // text between files is not part of the change.
            i += 1;
        }
    }
    if let Some(g) = git.take() {
        files.push(g.into_file()?);
    }
    Ok(files)
}

/// `a/src/x.py` → `src/x.py`; `/dev/null` → `None`. A tab ends the path
/// (`diff -u` puts the date after one).
fn side(raw: &str) -> Option<String> {
    let p = raw.split('\t').next().unwrap_or("").trim_end_matches('\r');
    let p = p
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(p);
    if p == "/dev/null" {
        return None;
    }
    // An absolute path stays one, so confinement refuses it by name.
    if p.starts_with('/') {
        return Some(p.to_string());
    }
    Some(strip_first(p))
}

fn strip_first(p: &str) -> String {
    match p.split_once('/') {
        Some((_, rest)) if !rest.is_empty() => rest.to_string(),
        _ => p.to_string(),
    }
}

/// A `diff --git` header and its extended lines, for files whose change
/// has no hunks (renames, empty files, deletions).
struct GitHeader {
    names: String,
    line: usize,
    new_mode: Option<u32>,
    created: bool,
    deleted: bool,
    rename: Option<(String, String)>,
    partial_rename: Option<String>,
}

impl GitHeader {
    fn new(names: &str, line: usize) -> Self {
        GitHeader {
            names: names.to_string(),
            line,
            new_mode: None,
            created: false,
            deleted: false,
            rename: None,
            partial_rename: None,
        }
    }

    fn display(&self) -> String {
        match &self.rename {
            Some((_, to)) => to.clone(),
            None => self
                .names
                .rsplit_once(" b/")
                .map(|(_, b)| b.to_string())
                .unwrap_or_else(|| self.names.clone()),
        }
    }

    fn rename_from(&self) -> Option<String> {
        self.rename.as_ref().map(|r| r.0.clone())
    }

    fn rename_to(&self) -> Option<String> {
        self.rename.as_ref().map(|r| r.1.clone())
    }

    fn extended(&mut self, l: &str, n: usize) -> Result<(), DiffError> {
        let mode = |m: &str| u32::from_str_radix(m.trim(), 8).ok();
        let path = self.display();
        let bad = |detail: &str| DiffError {
            path: path.clone(),
            hunk: None,
            line: n,
            detail: detail.to_string(),
        };
        if let Some(m) = l.strip_prefix("new file mode ") {
            self.created = true;
            self.new_mode = mode(m);
        } else if l.starts_with("deleted file mode ") {
            self.deleted = true;
        } else if let Some(m) = l.strip_prefix("new mode ") {
            self.new_mode = mode(m);
        } else if let Some(p) = l.strip_prefix("rename from ") {
            self.partial_rename = Some(p.to_string());
        } else if let Some(p) = l.strip_prefix("rename to ") {
            let from = self
                .partial_rename
                .take()
                .ok_or_else(|| bad("rename to without rename from"))?;
            self.rename = Some((from, p.to_string()));
        } else if l.starts_with("copy from ") || l.starts_with("copy to ") {
            return Err(bad("copies are not applied; send the new file whole"));
        }
        if self.new_mode == Some(0o120000) {
            return Err(bad("symbolic links are not created by a diff"));
        }
        Ok(())
    }

    /// The file this header describes when no `---`/`+++` followed.
    fn into_file(self) -> Result<FileDiff, DiffError> {
        let (a, b) = match self.names.split_once(" b/") {
            Some((a, b)) => (strip_first(a), b.to_string()),
            None => (self.names.clone(), self.names.clone()),
        };
        let (old, new) = match (&self.rename, self.created, self.deleted) {
            (Some((from, to)), _, _) => (Some(from.clone()), Some(to.clone())),
            (None, true, false) => (None, Some(b)),
            (None, false, true) => (Some(a), None),
            _ => {
                // A mode change alone, or an `index` line alone: no content change.
                return Ok(FileDiff {
                    old: Some(a),
                    new: Some(b),
                    new_mode: self.new_mode,
                    hunks: Vec::new(),
                    line: self.line,
                });
            }
        };
        Ok(FileDiff {
            old,
            new,
            new_mode: self.new_mode,
            hunks: Vec::new(),
            line: self.line,
        })
    }
}

/// `@@ -a,b +c,d @@` → (a, b, c, d); a missing count is 1.
fn header(l: &str) -> Option<(usize, usize, usize, usize)> {
    let body = l.strip_prefix("@@ -")?;
    let (ranges, _) = body.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let range = |r: &str| -> Option<(usize, usize)> {
        match r.split_once(',') {
            Some((s, c)) => Some((s.parse().ok()?, c.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    let (a, b) = range(old)?;
    let (c, d) = range(new)?;
    Some((a, b, c, d))
}

/// The hunk whose header is `lines[at]`, and the index after it.
fn hunk(lines: &[&str], at: usize) -> Result<(Hunk, usize), DiffError> {
    let fail = |line: usize, detail: String| DiffError {
        path: String::new(),
        hunk: None,
        line,
        detail,
    };
    let (old_start, mut old_left, _, mut new_left) = header(lines[at])
        .ok_or_else(|| fail(at + 1, format!("not a hunk header: {:?}", lines[at])))?;
    let mut h = Hunk {
        old_start,
        old: Vec::new(),
        new: Vec::new(),
        old_no_eol: false,
        new_no_eol: false,
        line: at + 1,
    };
    let mut i = at + 1;
    // Which sides the last line read belongs to, for a `\` marker after it.
    let mut last = (false, false);
    loop {
        let marker = lines.get(i).is_some_and(|l| l.starts_with('\\'));
        if marker {
            h.old_no_eol |= last.0;
            h.new_no_eol |= last.1;
            i += 1;
            continue;
        }
        if old_left == 0 && new_left == 0 {
            break;
        }
        let Some(l) = lines.get(i) else {
            return Err(fail(
                i,
                format!("the diff ends inside the hunk ({old_left} old and {new_left} new lines missing)"),
            ));
        };
        // An empty line inside a hunk is blank context whose space an
        // editor or a mail client dropped (git apply reads it so too).
        let (tag, text) = match l.split_at_checked(1) {
            Some((t, rest)) => (t, rest),
            None => (" ", ""),
        };
        match tag {
            " " if old_left > 0 && new_left > 0 => {
                h.old.push(text.to_string());
                h.new.push(text.to_string());
                old_left -= 1;
                new_left -= 1;
                last = (true, true);
            }
            "-" if old_left > 0 => {
                h.old.push(text.to_string());
                old_left -= 1;
                last = (true, false);
            }
            "+" if new_left > 0 => {
                h.new.push(text.to_string());
                new_left -= 1;
                last = (false, true);
            }
            _ => {
                return Err(fail(
                    i + 1,
                    format!(
                        "line {l:?} does not fit the hunk's counts ({old_left} old and {new_left} new lines left); the header's counts must match its lines"
                    ),
                ))
            }
        }
        i += 1;
    }
    Ok((h, i))
}

/// A file's content as lines (without `\n`) and whether it ends in one.
#[derive(Clone)]
struct Lines {
    lines: Vec<Vec<u8>>,
    eol: bool,
}

impl Lines {
    fn of(bytes: &[u8]) -> Self {
        if bytes.is_empty() {
            return Lines {
                lines: Vec::new(),
                eol: true,
            };
        }
        let eol = bytes.ends_with(b"\n");
        let body = if eol {
            &bytes[..bytes.len() - 1]
        } else {
            bytes
        };
        Lines {
            lines: body.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect(),
            eol,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.lines.join(&b'\n');
        if self.eol && !self.lines.is_empty() {
            out.push(b'\n');
        }
        out
    }
}

/// Applies `files` under `root`: all of it, or nothing (see the module
/// notes). `max_bytes` caps each resulting file.
pub fn apply(root: &Path, files: &[FileDiff], max_bytes: u64) -> Result<Applied, DiffError> {
    // Path → content after the diff (`None`: removed), in first-touched order.
    let mut state: BTreeMap<PathBuf, (String, Option<Lines>, Option<u32>)> = BTreeMap::new();
    let mut order: Vec<PathBuf> = Vec::new();
    for f in files {
        let label = f.new.clone().or_else(|| f.old.clone()).unwrap_or_default();
        let fail = |hunk: Option<usize>, line: usize, detail: String| DiffError {
            path: label.clone(),
            hunk,
            line,
            detail,
        };
        let before = match &f.old {
            None => None,
            Some(p) => {
                Some(load(root, p, &mut state, &mut order).map_err(|d| fail(None, f.line, d))?)
            }
        };
        let mut content = match (&f.old, before) {
            (None, _) => {
                if let Some(p) = &f.new {
                    let exists = load(root, p, &mut state, &mut order)
                        .map_err(|d| fail(None, f.line, d))?
                        .1
                        .is_some();
                    if exists {
                        return Err(fail(
                            None,
                            f.line,
                            "the diff creates a file that exists".into(),
                        ));
                    }
                }
                Lines::of(b"")
            }
            (Some(_), Some((_, Some(c)))) => c,
            (Some(p), _) => {
                return Err(fail(
                    None,
                    f.line,
                    format!("{p} does not exist (or was removed earlier in the diff)"),
                ))
            }
        };
        let mut floor = 0;
        let mut drift: isize = 0;
        for (k, h) in f.hunks.iter().enumerate() {
            let at = place(&content, h, floor, drift).map_err(|d| fail(Some(k + 1), h.line, d))?;
            drift = at as isize - (h.old_start.saturating_sub(1)) as isize;
            let end = at + h.old.len();
            let touches_end = end == content.lines.len();
            if h.old_no_eol && !touches_end {
                return Err(fail(
                    Some(k + 1),
                    h.line,
                    "the hunk says the file ends without a newline here, but it goes on".into(),
                ));
            }
            let new: Vec<Vec<u8>> = h.new.iter().map(|s| s.as_bytes().to_vec()).collect();
            floor = at + new.len();
            content.lines.splice(at..end, new);
            if touches_end {
                content.eol = !h.new_no_eol;
            }
        }
        if let Some(old) = &f.old {
            let rel = confine(old).map_err(|(_, d)| fail(None, f.line, d))?;
            if f.new.as_deref() != Some(old.as_str()) {
                state.insert(rel, (old.clone(), None, None));
            }
        }
        if let Some(new) = &f.new {
            let rel = confine(new).map_err(|(_, d)| fail(None, f.line, d))?;
            let size = content.bytes().len() as u64;
            if size > max_bytes {
                return Err(fail(
                    None,
                    f.line,
                    format!("the result is {size} bytes, over the {max_bytes}-byte cap"),
                ));
            }
            if !order.contains(&rel) {
                order.push(rel.clone());
            }
            state.insert(rel, (new.clone(), Some(content), f.new_mode));
        }
    }
    write_all(root, &state, &order, max_bytes)
}

/// The current content of `raw` (first from disk, then from earlier parts
/// of the diff); `None` inside when it does not exist.
fn load(
    root: &Path,
    raw: &str,
    state: &mut BTreeMap<PathBuf, (String, Option<Lines>, Option<u32>)>,
    order: &mut Vec<PathBuf>,
) -> Result<(PathBuf, Option<Lines>), String> {
    let rel = confine(raw).map_err(|(_, d)| d)?;
    if let Some((_, c, _)) = state.get(&rel) {
        return Ok((rel, c.clone()));
    }
    let content = match existing_file(root, raw).map_err(|(_, d)| d)? {
        Some((_, full)) => Some(Lines::of(
            &std::fs::read(&full).map_err(|e| format!("reading {raw}: {e}"))?,
        )),
        None => None,
    };
    order.push(rel.clone());
    state.insert(rel.clone(), (raw.to_string(), content.clone(), None));
    Ok((rel, content))
}

/// Where hunk `h`'s old side sits in `content`: at its header's line
/// (moved by how far earlier hunks drifted) or the nearest exact match,
/// never before `floor`. Says what differs when there is none.
fn place(content: &Lines, h: &Hunk, floor: usize, drift: isize) -> Result<usize, String> {
    let old: Vec<&[u8]> = h.old.iter().map(|s| s.as_bytes()).collect();
    let n = content.lines.len();
    // A pure insertion after line `old_start` (0: at the top).
    let expected = if old.is_empty() {
        h.old_start
    } else {
        h.old_start.saturating_sub(1)
    };
    let expected = (expected as isize + drift).clamp(floor as isize, n as isize) as usize;
    if old.is_empty() {
        return Ok(expected);
    }
    if old.len() > n {
        return Err(format!(
            "the hunk removes or keeps {} lines but the file has {n}",
            old.len()
        ));
    }
    let fits = |at: usize| {
        content.lines[at..at + old.len()]
            .iter()
            .zip(&old)
            .all(|(a, b)| a.as_slice() == *b)
    };
    let last = n - old.len();
    if floor <= last {
        let expected = expected.clamp(floor, last);
        for d in 0..=(last - floor) {
            let down = expected.checked_sub(d).filter(|p| *p >= floor);
            let up = Some(expected + d).filter(|p| *p <= last);
            if down.is_none() && up.is_none() {
                break;
            }
            if let Some(p) = [down, up].into_iter().flatten().find(|p| fits(*p)) {
                return Ok(p);
            }
        }
    }
    Err(mismatch(content, &old, expected.min(last)))
}

/// Says which line of the hunk's old side differs from the file where the
/// hunk was expected, so the sender can fix the diff.
fn mismatch(content: &Lines, old: &[&[u8]], at: usize) -> String {
    for (k, want) in old.iter().enumerate() {
        let got = content.lines.get(at + k).map(Vec::as_slice);
        if got != Some(*want) {
            return format!(
                "its lines are not in the file; at line {} it expects {:?} but the file has {:?}",
                at + k + 1,
                String::from_utf8_lossy(want),
                got.map(String::from_utf8_lossy).unwrap_or_default()
            );
        }
    }
    "its lines are not in the file".into()
}

fn write_all(
    root: &Path,
    state: &BTreeMap<PathBuf, (String, Option<Lines>, Option<u32>)>,
    order: &[PathBuf],
    max_bytes: u64,
) -> Result<Applied, DiffError> {
    let mut done = Applied::default();
    let io = |raw: &str, detail: String| DiffError {
        path: raw.to_string(),
        hunk: None,
        line: 0,
        detail,
    };
    for rel in order {
        let Some((raw, content, mode)) = state.get(rel) else {
            continue;
        };
        match content {
            Some(c) => {
                let written =
                    write_file(root, raw, &c.bytes(), max_bytes).map_err(|(_, d)| io(raw, d))?;
                if mode.is_some_and(|m| m & 0o111 != 0) {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(
                        root.join(&written),
                        std::fs::Permissions::from_mode(0o755),
                    );
                }
                done.written.push(written.to_string_lossy().into_owned());
            }
            None => {
                if let Some((_, full)) = existing_file(root, raw).map_err(|(_, d)| io(raw, d))? {
                    std::fs::remove_file(&full).map_err(|e| io(raw, format!("removing: {e}")))?;
                    done.removed.push(rel.to_string_lossy().into_owned());
                }
            }
        }
    }
    Ok(done)
}

/// Parses and applies `text` under `root` (see [`parse`] and [`apply`]).
pub fn apply_text(root: &Path, text: &str, max_bytes: u64) -> Result<Applied, DiffError> {
    apply(root, &parse(text)?, max_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, t) in files {
            let path = d.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, t).unwrap();
        }
        d
    }

    fn read(d: &tempfile::TempDir, p: &str) -> String {
        std::fs::read_to_string(d.path().join(p)).unwrap()
    }

    const CAP: u64 = 1 << 20;

    #[test]
    fn a_git_diff_changes_creates_and_deletes() {
        let d = tree(&[
            ("src/a.py", "one\ntwo\nthree\nfour\n"),
            ("old.txt", "bye\n"),
        ]);
        let diff = "diff --git a/src/a.py b/src/a.py\nindex 1..2 100644\n--- a/src/a.py\n+++ b/src/a.py\n@@ -1,4 +1,4 @@\n one\n-two\n+TWO\n three\n four\n\
diff --git a/new.txt b/new.txt\nnew file mode 100755\nindex 0000000..1\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1,2 @@\n+hello\n+world\n\
diff --git a/old.txt b/old.txt\ndeleted file mode 100644\n--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n";
        let done = apply_text(d.path(), diff, CAP).unwrap();
        assert_eq!(read(&d, "src/a.py"), "one\nTWO\nthree\nfour\n");
        assert_eq!(read(&d, "new.txt"), "hello\nworld\n");
        assert!(!d.path().join("old.txt").exists());
        assert_eq!(done.written, vec!["src/a.py", "new.txt"]);
        assert_eq!(done.removed, vec!["old.txt"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("new.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "new file mode 100755 is executable");
    }

    #[test]
    fn a_hunk_that_drifted_is_found_and_later_hunks_follow() {
        let mut body: Vec<String> = (1..=40).map(|i| format!("line {i}")).collect();
        let d = tree(&[("f.txt", &(body.join("\n") + "\n"))]);
        // Headers say lines 5 and 30, but three lines were added on top since.
        std::fs::write(
            d.path().join("f.txt"),
            format!("x\ny\nz\n{}\n", body.join("\n")),
        )
        .unwrap();
        let diff = "--- a/f.txt\n+++ b/f.txt\n@@ -5,3 +5,3 @@\n line 5\n-line 6\n+LINE 6\n line 7\n@@ -30,2 +30,3 @@\n line 30\n+added\n line 31\n";
        apply_text(d.path(), diff, CAP).unwrap();
        body[5] = "LINE 6".into();
        body.insert(30, "added".into());
        assert_eq!(read(&d, "f.txt"), format!("x\ny\nz\n{}\n", body.join("\n")));
    }

    #[test]
    fn a_hunk_that_does_not_match_names_the_file_the_hunk_and_the_line() {
        let d = tree(&[("a.txt", "a\nb\nc\n"), ("b.txt", "keep\n")]);
        let diff = "--- a/b.txt\n+++ b/b.txt\n@@ -1 +1 @@\n-keep\n+changed\n--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n a\n-B\n+x\n c\n";
        let e = apply_text(d.path(), diff, CAP).unwrap_err();
        assert_eq!((e.path.as_str(), e.hunk, e.line), ("a.txt", Some(1), 8));
        assert!(
            e.detail
                .contains("at line 2 it expects \"B\" but the file has \"b\""),
            "{e}"
        );
        assert_eq!(
            read(&d, "b.txt"),
            "keep\n",
            "nothing is written when a hunk fails"
        );
    }

    #[test]
    fn confinement_holds_for_diffs() {
        let d = tree(&[("in.txt", "x\n")]);
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        for (diff, why) in [
            ("--- /dev/null\n+++ b/../escape.txt\n@@ -0,0 +1 @@\n+x\n", "`..`"),
            ("--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+x\n", "protected"),
            ("--- /dev/null\n+++ b/link/x.txt\n@@ -0,0 +1 @@\n+x\n", "symlink"),
            ("--- /dev/null\n+++ /etc/passwd\n@@ -0,0 +1 @@\n+x\n", "relative"),
            ("diff --git a/l b/l\nnew file mode 120000\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+/etc\n", "symbolic links"),
            ("diff --git a/in.txt b/in.txt\nGIT binary patch\nliteral 1\n", "binary"),
            ("--- a/in.txt\n+++ b/in.txt\n@@ -1 +1,2 @@\n x\n+y\n+z\n", "counts"),
        ] {
            let e = apply_text(d.path(), diff, CAP).unwrap_err();
            assert!(e.to_string().contains(why), "{diff:?}: {e}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(!d.path().join(".git").exists());
        let big = format!(
            "--- /dev/null\n+++ b/big.txt\n@@ -0,0 +1 @@\n+{}\n",
            "x".repeat(100)
        );
        let e = apply_text(d.path(), &big, 50).unwrap_err();
        assert!(e.detail.contains("over the 50-byte cap"), "{e}");
    }

    #[test]
    fn crlf_and_missing_final_newlines_are_kept() {
        let d = tree(&[("w.txt", "a\r\nb\r\n"), ("n.txt", "a\nb")]);
        let diff = "--- a/w.txt\n+++ b/w.txt\n@@ -1,2 +1,2 @@\n a\r\n-b\r\n+c\r\n\
--- a/n.txt\n+++ b/n.txt\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n";
        apply_text(d.path(), diff, CAP).unwrap();
        assert_eq!(read(&d, "w.txt"), "a\r\nc\r\n");
        assert_eq!(read(&d, "n.txt"), "a\nc\n", "the new side has its newline");
        let back =
            "--- a/n.txt\n+++ b/n.txt\n@@ -1,2 +1,2 @@\n a\n-c\n+d\n\\ No newline at end of file\n";
        apply_text(d.path(), back, CAP).unwrap();
        assert_eq!(read(&d, "n.txt"), "a\nd");
    }

    #[test]
    fn renames_and_blank_context_without_its_space() {
        let d = tree(&[("a.txt", "1\n\n3\n")]);
        let diff = "diff --git a/a.txt b/b.txt\nsimilarity index 90%\nrename from a.txt\nrename to b.txt\n--- a/a.txt\n+++ b/b.txt\n@@ -1,3 +1,3 @@\n 1\n\n-3\n+three\n";
        apply_text(d.path(), diff, CAP).unwrap();
        assert!(!d.path().join("a.txt").exists());
        assert_eq!(read(&d, "b.txt"), "1\n\nthree\n");
        let pure = "diff --git a/b.txt b/c.txt\nsimilarity index 100%\nrename from b.txt\nrename to c.txt\n";
        apply_text(d.path(), pure, CAP).unwrap();
        assert_eq!(read(&d, "c.txt"), "1\n\nthree\n");
    }

    #[test]
    fn an_empty_diff_is_told_apart() {
        assert!(is_empty_diff("\n  \n"));
        assert!(!is_empty_diff("--- a/x\n"));
        assert_eq!(parse("just words\n").unwrap(), Vec::new());
    }
}

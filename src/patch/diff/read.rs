//! The unified-diff grammar (see the parent module) into [`FileDiff`]s.

use super::{DiffError, FileDiff, Hunk, MAX_DIFF_BYTES};

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

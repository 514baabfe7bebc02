//! Hunks placed in the files' current content, and the results written,
//! all or nothing (see the parent module).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Applied, DiffError, FileDiff, Hunk};
use crate::patch::apply::{confine, existing_file, write_file};

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

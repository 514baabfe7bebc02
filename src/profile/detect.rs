//! Telling a project's language from its files: a marker file in the root
//! (`go.mod`, `package.json`, ...) names it; without one, the language with
//! the most source files in the first levels of the tree does.

use std::path::Path;

use super::{Profile, Profiles};

/// How deep and how wide detection looks: enough for `src/main/java/org/x/`,
/// bounded so a huge folder costs milliseconds, not a walk of the disk.
const MAX_DEPTH: usize = 8;
const MAX_ENTRIES: usize = 5_000;

/// What detection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// The profile chosen.
    pub chosen: String,
    /// Why, e.g. `go.mod` or `12 .py files`.
    pub evidence: String,
    /// Other profiles that matched too, with their evidence.
    pub others: Vec<(String, String)>,
}

impl Detection {
    /// One line for the user: what was chosen, why, and how to pick another.
    pub fn describe(&self) -> String {
        let mut line = format!("profile {} ({})", self.chosen, self.evidence);
        if !self.others.is_empty() {
            let others: Vec<String> = self
                .others
                .iter()
                .map(|(n, e)| format!("{n} ({e})"))
                .collect();
            line.push_str(&format!(
                "; also found {}: pass --profile {} to use it",
                others.join(", "),
                self.others[0].0
            ));
        }
        line
    }
}

/// The profile `dir`'s files point to, or `None` when nothing matches (an
/// empty or missing folder, say).
pub fn detect(dir: &Path, profiles: &Profiles) -> Option<Detection> {
    let mut counts: Vec<(&Profile, usize)> = profiles.iter().map(|p| (p, 0)).collect();
    let mut found: Vec<(&Profile, String)> = Vec::new();
    for p in profiles.iter() {
        if let Some(m) = p.markers.iter().find(|m| dir.join(m).is_file()) {
            found.push((p, m.clone()));
        }
    }
    let mut seen = 0;
    count_sources(dir, 0, &mut seen, &mut counts);
    // Marker files first, in the order of their profile's source count;
    // a tie goes by the documented order of the built-in profiles.
    found.sort_by_key(|(p, _)| (std::cmp::Reverse(count_of(&counts, p)), rank(&p.name)));
    let mut by_sources: Vec<(&Profile, usize)> = counts
        .into_iter()
        .filter(|(p, n)| *n > 0 && !found.iter().any(|(f, _)| f.name == p.name))
        .collect();
    by_sources.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let mut all = found.into_iter().map(|(p, m)| (p.name.clone(), m)).chain(
        by_sources
            .into_iter()
            .map(|(p, n)| (p.name.clone(), sources(n, &p.extensions))),
    );
    let (chosen, evidence) = all.next()?;
    Some(Detection {
        chosen,
        evidence,
        others: all.collect(),
    })
}

/// Where a profile stands when two tie: the built-in ones as documented,
/// then the user's.
fn rank(name: &str) -> usize {
    ["python", "node", "go", "rust", "java"]
        .iter()
        .position(|n| *n == name)
        .unwrap_or(usize::MAX)
}

fn count_of(counts: &[(&Profile, usize)], p: &Profile) -> usize {
    counts
        .iter()
        .find(|(q, _)| q.name == p.name)
        .map_or(0, |(_, n)| *n)
}

fn sources(n: usize, extensions: &[String]) -> String {
    let ext = extensions.first().map(String::as_str).unwrap_or("?");
    format!("{n} .{ext} file{}", if n == 1 { "" } else { "s" })
}

fn count_sources(dir: &Path, depth: usize, seen: &mut usize, counts: &mut [(&Profile, usize)]) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    // In name order: which entries the cap leaves out must not depend on
    // the file system's order (for folders of up to 100,000 entries).
    let mut entries: Vec<_> = rd.flatten().take(100_000).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        *seen += 1;
        if *seen > MAX_ENTRIES {
            return;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // file_type does not follow symlinks: a link never leads the walk out.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            let skip = name.starts_with('.')
                || ["node_modules", "target", "vendor", "__pycache__", "build"]
                    .contains(&name.as_ref());
            if !skip && depth + 1 < MAX_DEPTH {
                count_sources(&entry.path(), depth + 1, seen, counts);
            }
        } else if kind.is_file() {
            if let Some((_, ext)) = name.rsplit_once('.') {
                for (p, n) in counts.iter_mut() {
                    if p.extensions.iter().any(|e| e == ext) {
                        *n += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        d
    }

    #[test]
    fn a_marker_file_names_the_language() {
        let all = Profiles::default();
        for (file, name) in [
            ("go.mod", "go"),
            ("package.json", "node"),
            ("Cargo.toml", "rust"),
            ("pom.xml", "java"),
            ("pyproject.toml", "python"),
        ] {
            let d = tree(&[file]);
            let got = detect(d.path(), &all).unwrap();
            assert_eq!((got.chosen.as_str(), got.evidence.as_str()), (name, file));
            assert!(got.others.is_empty());
        }
        // Two markers and no source: the documented order decides.
        let d = tree(&["pyproject.toml", "package.json"]);
        let got = detect(d.path(), &all).unwrap();
        assert_eq!(got.chosen, "python");
        assert_eq!(got.others[0].0, "node");
    }

    #[test]
    fn sources_decide_without_a_marker_and_others_are_named() {
        let all = Profiles::default();
        let d = tree(&[
            "src/main/java/a/A.java",
            "src/test/java/a/ATest.java",
            "x.py",
        ]);
        let got = detect(d.path(), &all).unwrap();
        assert_eq!(got.chosen, "java");
        assert_eq!(got.evidence, "2 .java files");
        assert_eq!(
            got.others,
            [("python".to_string(), "1 .py file".to_string())]
        );
        assert_eq!(
            got.describe(),
            "profile java (2 .java files); also found python (1 .py file): pass --profile python to use it"
        );
        // Two markers: the one with more sources wins; the other is named.
        let d = tree(&["package.json", "pyproject.toml", "a.py", "b.py", "c.js"]);
        let got = detect(d.path(), &all).unwrap();
        assert_eq!(got.chosen, "python");
        assert_eq!(got.others[0].0, "node");
        // Dependencies and build output do not count.
        let d = tree(&["main.go", "node_modules/x/a.js", "node_modules/x/b.js"]);
        assert_eq!(detect(d.path(), &all).unwrap().chosen, "go");
        assert_eq!(detect(&d.path().join("missing"), &all), None);
        assert_eq!(detect(tree(&["README.md"]).path(), &all), None);
    }
}

//! Protected test infrastructure: what a reply may not write, so that a
//! pass is earned by the code and not bought by changing the judge.
//!
//! Three kinds of paths are refused (reason `protected_test`):
//! - the project's tests as they were before the model's first reply (by
//!   the languages' conventions: `test_*.py`, `*_test.go`, `*.test.js`,
//!   `tests/`, ...), and anything that would shadow one (`test_calc/` or
//!   `test_calc.so` beside `test_calc.py`);
//! - files that configure or hook a test runner, new or not: `conftest.py`,
//!   `pytest.ini`, `tox.ini`, `setup.cfg`, interpreter start-up hooks
//!   (`sitecustomize.py`, `usercustomize.py`, `*.pth`), modules named like a
//!   test framework (`unittest`, `pytest`), JavaScript runners' config
//!   files, `build.rs` and `.cargo/`; and, when the project already has
//!   them, its manifests that hold test settings (`pyproject.toml`,
//!   `package.json`, `Cargo.toml`, `pom.xml`, Gradle builds);
//! - whatever the operator adds with `--protect GLOB`.
//!
//! New test files are allowed: a task may ask for tests. `--allow-test-edits`
//! lifts the rule. Code under test that patches the framework in-process at
//! run time cannot be stopped this way; `--holdout` is the answer to that.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::patch::apply::confine;
use crate::patch::{ParsedReply, Refusal, RefusalReason};
use crate::workspace::WorkspaceError;

/// Settings of the protection, as the operator gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protection {
    /// `--allow-test-edits`: the model may change anything the other rules allow.
    pub allow_test_edits: bool,
    /// `--protect GLOB`: more paths (gitignore-style, from the workspace root).
    pub globs: Vec<String>,
}

/// File names that configure or hook a test runner wherever they are.
const HOOKS: &[&str] = &[
    "conftest.py",
    "pytest.ini",
    ".pytest.ini",
    "tox.ini",
    "setup.cfg",
    "sitecustomize.py",
    "usercustomize.py",
    "build.rs",
    "karma.conf.js",
];
/// Name beginnings of JavaScript runners' config files (`jest.config.js`, ...).
const HOOK_PREFIXES: &[&str] = &["jest.config.", "vitest.config.", ".mocharc", "ava.config."];
/// Module names a test process imports: a file or folder of that name in
/// the workspace shadows the framework itself.
const FRAMEWORKS: &[&str] = &["unittest", "pytest", "_pytest", "pluggy", "doctest"];
/// Manifests that hold test settings: protected when the project has them
/// (a model writing a project from nothing must be able to create them).
const MANIFESTS: &[&str] = &[
    "pyproject.toml",
    "package.json",
    "Cargo.toml",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
];
/// Folders whose files are tests by convention.
const TEST_DIRS: &[&str] = &["tests", "test", "__tests__", "spec", "testdata"];

/// Whether `rel` is a test file by the languages' conventions.
pub fn is_test_file(rel: &Path) -> bool {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let in_test_dir = rel
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .any(|c| TEST_DIRS.contains(&c.as_os_str().to_string_lossy().as_ref()));
    let js = [".js", ".ts", ".mjs", ".cjs", ".jsx", ".tsx"];
    in_test_dir
        || (name.starts_with("test_") && name.ends_with(".py"))
        || name.ends_with("_test.py")
        || name.ends_with("_test.go")
        || name.ends_with("Test.java")
        || name.ends_with("Tests.java")
        || js
            .iter()
            .any(|e| name.ends_with(&format!(".test{e}")) || name.ends_with(&format!(".spec{e}")))
}

/// Why a hook file is protected, if `rel` is one: a file that configures
/// or hooks a test runner, or shadows a test framework.
pub fn hooks_tests(rel: &Path) -> Option<&'static str> {
    let name = rel.file_name()?.to_string_lossy().to_string();
    if HOOKS.contains(&name.as_str()) || HOOK_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some("it configures or hooks the test runner");
    }
    if name.ends_with(".pth") {
        return Some("the interpreter runs it at start-up");
    }
    let shadows = rel.components().any(|c| {
        let c = c.as_os_str().to_string_lossy();
        let stem = c.split('.').next().unwrap_or_default();
        FRAMEWORKS.contains(&stem)
    });
    if shadows {
        return Some("it would shadow a test framework");
    }
    if rel.components().any(|c| c.as_os_str() == ".cargo") {
        return Some("it configures the build of the tests");
    }
    None
}

/// What the replies of one run may not write.
#[derive(Debug, Clone, Default)]
pub struct TestGuard {
    off: bool,
    /// The workspace held a test file before the first reply.
    tests: bool,
    /// The tests and manifests there were before the first reply.
    existing: BTreeSet<PathBuf>,
    globs: Option<ignore::overrides::Override>,
}

impl TestGuard {
    /// Records the tests and manifests of `root` as they are now (before
    /// the model's first reply).
    pub fn scan(root: &Path, p: &Protection) -> Result<Self, WorkspaceError> {
        let globs = if p.globs.is_empty() {
            None
        } else {
            let mut b = ignore::overrides::OverrideBuilder::new(root);
            for g in &p.globs {
                b.add(g).map_err(|e| WorkspaceError::BadExclude {
                    pattern: g.clone(),
                    detail: e.to_string(),
                })?;
            }
            Some(b.build().map_err(|e| WorkspaceError::BadExclude {
                pattern: p.globs.join(","),
                detail: e.to_string(),
            })?)
        };
        let mut existing = BTreeSet::new();
        if root.is_dir() {
            let all = crate::workspace::manifest(
                root,
                &crate::workspace::CopyOptions::default(),
                u64::MAX,
            )?;
            for e in all.entries {
                let name = e.rel.file_name().map(|n| n.to_string_lossy().into_owned());
                let manifest = name.is_some_and(|n| MANIFESTS.contains(&n.as_str()));
                if !matches!(e.kind, crate::workspace::EntryKind::Dir)
                    && (manifest || is_test_file(&e.rel))
                {
                    existing.insert(e.rel);
                }
            }
        }
        Ok(TestGuard {
            off: p.allow_test_edits,
            tests: existing.iter().any(|t| is_test_file(t)),
            existing,
            globs,
        })
    }

    /// Whether the workspace held tests before the first reply (found
    /// whether or not their protection is lifted).
    pub fn has_tests(&self) -> bool {
        self.tests
    }

    /// Why a reply may not write `rel` (a confined relative path), if so.
    pub fn refuses(&self, rel: &Path) -> Option<String> {
        if self.off {
            return None;
        }
        if self.existing.contains(rel) {
            return Some(if is_test_file(rel) {
                "one of the project's tests (they judge your work; change the code, not the tests)"
                    .into()
            } else {
                "the project's manifest holds its test settings".into()
            });
        }
        let shadowed = self.existing.iter().filter(|t| is_test_file(t)).find(|t| {
            let base = t.with_extension("");
            rel != t.as_path()
                && rel.starts_with(&base)
                && rel.components().count() > base.components().count()
                || rel.parent() == base.parent()
                    && rel.file_stem() == base.file_name()
                    && rel != t.as_path()
        });
        if let Some(t) = shadowed {
            return Some(format!("it would shadow the test {}", t.display()));
        }
        if let Some(why) = hooks_tests(rel) {
            return Some(why.into());
        }
        if let Some(g) = &self.globs {
            if g.matched(rel, false).is_whitelist() {
                return Some("protected by --protect".into());
            }
        }
        None
    }

    /// Moves every block of `reply` that may not be written to its refusals.
    pub fn filter(&self, reply: &mut ParsedReply) {
        if self.off {
            return;
        }
        let blocks = std::mem::take(&mut reply.blocks);
        for b in blocks {
            // A path apply would refuse anyway is left to apply's message.
            let why = confine(&b.path).ok().and_then(|rel| self.refuses(&rel));
            match why {
                Some(why) => reply.refused.push(Refusal {
                    detail: format!("{} is protected: {why}", b.path),
                    path: b.path,
                    reason: RefusalReason::ProtectedTest,
                    line: b.line,
                }),
                None => reply.blocks.push(b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn guard(files: &[&str], p: Protection) -> (tempfile::TempDir, TestGuard) {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let path = d.path().join(f);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "x").unwrap();
        }
        let g = TestGuard::scan(d.path(), &p).unwrap();
        (d, g)
    }

    #[test]
    fn existing_tests_hooks_and_shadows_are_refused_new_tests_are_not() {
        let (_d, g) = guard(
            &[
                "calc.py",
                "test_calc.py",
                "pkg/tests/test_x.py",
                "pyproject.toml",
                "web/a.test.js",
                "go/a_test.go",
            ],
            Protection::default(),
        );
        for p in [
            "test_calc.py",
            "pkg/tests/test_x.py",
            "pyproject.toml",
            "web/a.test.js",
            "go/a_test.go",
            "conftest.py",
            "sub/conftest.py",
            "pytest.ini",
            "setup.cfg",
            "sitecustomize.py",
            "evil.pth",
            "unittest.py",
            "unittest/__init__.py",
            "pytest/__init__.py",
            "lib/_pytest/x.py",
            "test_calc/__init__.py",
            "test_calc.so",
            "jest.config.js",
            ".cargo/config.toml",
        ] {
            assert!(g.refuses(Path::new(p)).is_some(), "{p} was allowed");
        }
        for p in [
            "calc.py",
            "test_new.py",
            "tests/test_more.py",
            "README.md",
            "util.py",
        ] {
            assert_eq!(g.refuses(Path::new(p)), None, "{p} was refused");
        }
        // A project without a manifest may get one.
        let (_d, fresh) = guard(&[], Protection::default());
        assert_eq!(fresh.refuses(Path::new("package.json")), None);
    }

    #[test]
    fn allow_test_edits_lifts_it_and_protect_adds_paths() {
        let (_d, off) = guard(
            &["test_calc.py"],
            Protection {
                allow_test_edits: true,
                globs: vec![],
            },
        );
        assert_eq!(off.refuses(Path::new("test_calc.py")), None);
        assert_eq!(off.refuses(Path::new("conftest.py")), None);
        let (_d, more) = guard(
            &[],
            Protection {
                allow_test_edits: false,
                globs: vec!["fixtures/**".into(), "golden.txt".into()],
            },
        );
        assert!(more.refuses(Path::new("fixtures/a/b.json")).is_some());
        assert!(more.refuses(Path::new("golden.txt")).is_some());
        assert_eq!(more.refuses(Path::new("main.py")), None);
    }

    #[test]
    fn filter_moves_protected_blocks_to_refusals() {
        let (_d, g) = guard(&["test_calc.py"], Protection::default());
        let mut r = crate::patch::parse(
            "PATCH::test_calc.py\n# gone\nENDPATCH\nPATCH::calc.py\nok\nENDPATCH\nPATCH::conftest.py\nx\nENDPATCH\n",
        );
        g.filter(&mut r);
        assert_eq!(r.blocks.len(), 1);
        assert_eq!(r.blocks[0].path, "calc.py");
        assert_eq!(r.refused.len(), 2);
        assert!(r
            .refused
            .iter()
            .all(|x| x.reason == RefusalReason::ProtectedTest));
    }
}

//! Language profiles: what a project in one language needs from autodev —
//! the image, the test command, what to leave out of the copy, where a JUnit
//! report lands, and what the model should know of the language's layout.
//!
//! Five are built in; a configuration file may define more or override any
//! field of one (`[profiles.NAME]`). A profile only supplies defaults: a
//! setting given in a file, the environment or on the command line wins.

mod detect;

use std::collections::BTreeMap;

/// Image used when no profile names one: built from `images/python`.
pub const DEFAULT_IMAGE: &str = "autodev/python:latest";

pub use detect::{detect, Detection};

/// A language profile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Profile {
    /// Its name, e.g. `python`.
    pub name: String,
    /// Image the tests run in.
    pub image: String,
    /// Test command, run with `/bin/sh -c` in the workspace.
    pub runner: String,
    /// Gitignore-style patterns left out of the copy, besides the workspace's
    /// own defaults (`.git/`, `target/`, `node_modules/`, ...).
    pub exclude: Vec<String>,
    /// JUnit XML report the runner writes, if not the image's label.
    pub junit: Option<String>,
    /// What the model is told of the language's conventions.
    pub prompt: String,
    /// Files whose presence in a project's root names this language.
    pub markers: Vec<String>,
    /// File extensions of its sources, for projects without a marker.
    pub extensions: Vec<String>,
}

/// The profile used when none is chosen and none is detected.
pub const DEFAULT: &str = "python";

/// Built-in profiles: name, image, runner, excludes, prompt, markers, extensions.
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);

const BUILTIN: &[Builtin] = &[
    (
        "python",
        DEFAULT_IMAGE,
        "python3 -m pytest -q",
        &[".pytest_cache/", ".mypy_cache/", ".tox/"],
        "Python 3.11 with pytest. Put tests in test_*.py files (pytest or unittest style) next to \
         the code or under tests/; import modules by their path from the project root.",
        &["pyproject.toml", "setup.py", "setup.cfg", "requirements.txt"],
        &["py"],
    ),
    (
        "node",
        "autodev/node:latest",
        "node --test",
        &["coverage/", ".nyc_output/"],
        "Node.js 18, CommonJS unless package.json says \"type\": \"module\". Tests use the built-in \
         runner: `const test = require('node:test'); const assert = require('node:assert');` in \
         files named *.test.js (or under test/). No npm registry: only Node's standard library \
         and what is already in node_modules.",
        &["package.json"],
        &["js", "mjs", "cjs"],
    ),
    (
        "go",
        "autodev/go:latest",
        "go test ./...",
        &["bin/"],
        "Go 1.19 with the go command; go.mod at the root. Tests are *_test.go files in the \
         package they test, using the standard testing package. No module proxy: only the \
         standard library and vendored modules.",
        &["go.mod"],
        &["go"],
    ),
    (
        "rust",
        "autodev/rust:latest",
        "cargo test --offline",
        &[],
        "Rust 1.63 (edition 2021) with cargo; Cargo.toml at the root. Unit tests in #[cfg(test)] \
         modules, integration tests in tests/*.rs. No crates.io: only the standard library and \
         vendored crates.",
        &["Cargo.toml"],
        &["rs"],
    ),
    (
        "java",
        "autodev/java:latest",
        "mkdir -p /tmp/classes && javac -d /tmp/classes $(find . -name '*.java') && \
         java org.junit.runner.JUnitCore $(cd /tmp/classes && find . -name '*Test.class' | \
         sed 's|^\\./||; s|\\.class$||; s|/|.|g')",
        &["build/", "*.class"],
        "Java 17 with JUnit 4 (org.junit.Test, org.junit.Assert), compiled with plain javac: no \
         Maven or Gradle, no other libraries. Every class whose name ends in Test is run as a \
         JUnit 4 test class; keep packages matching folders.",
        &["pom.xml", "build.gradle", "build.gradle.kts"],
        &["java"],
    ),
];

/// A profile's fields as a configuration file gives them; each may be absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilePatch {
    /// Image.
    pub image: Option<String>,
    /// Test command.
    pub runner: Option<String>,
    /// Copy excludes.
    pub exclude: Option<Vec<String>>,
    /// JUnit report path.
    pub junit: Option<String>,
    /// Prompt addendum.
    pub prompt: Option<String>,
    /// Marker files.
    pub markers: Option<Vec<String>>,
    /// Source extensions.
    pub extensions: Option<Vec<String>>,
}

/// Every profile known: the built-in ones with the files' changes laid on.
#[derive(Debug, Clone)]
pub struct Profiles {
    by_name: BTreeMap<String, Profile>,
}

impl Default for Profiles {
    fn default() -> Self {
        let by_name = BUILTIN
            .iter()
            .map(
                |(name, image, runner, exclude, prompt, markers, extensions)| {
                    let p = Profile {
                        name: name.to_string(),
                        image: image.to_string(),
                        runner: runner.to_string(),
                        exclude: exclude.iter().map(|s| s.to_string()).collect(),
                        junit: None,
                        prompt: prompt.to_string(),
                        markers: markers.iter().map(|s| s.to_string()).collect(),
                        extensions: extensions.iter().map(|s| s.to_string()).collect(),
                    };
                    (name.to_string(), p)
                },
            )
            .collect();
        Profiles { by_name }
    }
}

/// A profile that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    /// The name is not a known profile.
    #[error("unknown profile {name:?}: use one of {known}, or define it under [profiles.{name}] in a config file")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
    /// A new profile lacks a field only built-in ones may omit.
    #[error(
        "profile {name:?} has no {field}: a profile that is not built in needs image and runner"
    )]
    Incomplete {
        /// The profile.
        name: String,
        /// The missing field.
        field: &'static str,
    },
}

impl Profiles {
    /// Lays `patch` over the profile `name` (a new one if it is not known).
    pub fn apply(&mut self, name: &str, patch: ProfilePatch) -> Result<(), ProfileError> {
        let p = match self.by_name.get_mut(name) {
            Some(p) => p,
            None => {
                let missing = |field| ProfileError::Incomplete {
                    name: name.to_string(),
                    field,
                };
                let image = patch.image.clone().ok_or_else(|| missing("image"))?;
                let runner = patch.runner.clone().ok_or_else(|| missing("runner"))?;
                self.by_name.entry(name.to_string()).or_insert(Profile {
                    name: name.to_string(),
                    image,
                    runner,
                    exclude: Vec::new(),
                    junit: None,
                    prompt: String::new(),
                    markers: Vec::new(),
                    extensions: Vec::new(),
                })
            }
        };
        let ProfilePatch {
            image,
            runner,
            exclude,
            junit,
            prompt,
            markers,
            extensions,
        } = patch;
        p.image = image.unwrap_or(std::mem::take(&mut p.image));
        p.runner = runner.unwrap_or(std::mem::take(&mut p.runner));
        p.exclude = exclude.unwrap_or(std::mem::take(&mut p.exclude));
        p.junit = junit.or(p.junit.take());
        p.prompt = prompt.unwrap_or(std::mem::take(&mut p.prompt));
        p.markers = markers.unwrap_or(std::mem::take(&mut p.markers));
        p.extensions = extensions.unwrap_or(std::mem::take(&mut p.extensions));
        Ok(())
    }

    /// The profile called `name`.
    pub fn get(&self, name: &str) -> Result<&Profile, ProfileError> {
        self.by_name.get(name).ok_or_else(|| ProfileError::Unknown {
            name: name.to_string(),
            known: self.names().join(", "),
        })
    }

    /// Names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// All profiles, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_use_the_built_in_images() {
        let all = Profiles::default();
        assert_eq!(all.names(), ["go", "java", "node", "python", "rust"]);
        let embedded = crate::images::Definitions::Embedded.available().unwrap();
        for p in all.iter() {
            assert_eq!(p.image, crate::images::tag_for(&p.name), "{}", p.name);
            assert!(embedded.contains(&p.name), "{} has no image", p.name);
            assert!(!p.runner.is_empty() && !p.prompt.is_empty());
        }
        assert_eq!(all.get(DEFAULT).unwrap().image, DEFAULT_IMAGE);
    }

    #[test]
    fn files_override_fields_and_add_profiles() {
        let mut all = Profiles::default();
        all.apply(
            "go",
            ProfilePatch {
                image: Some("corp/go:1.22".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let go = all.get("go").unwrap();
        assert_eq!(go.image, "corp/go:1.22");
        assert_eq!(go.runner, "go test ./...");
        let err = all
            .apply(
                "zig",
                ProfilePatch {
                    image: Some("zig".into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("needs image and runner"), "{err}");
        all.apply(
            "zig",
            ProfilePatch {
                image: Some("corp/zig".into()),
                runner: Some("zig build test".into()),
                markers: Some(vec!["build.zig".into()]),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(all.get("zig").unwrap().runner, "zig build test");
        let err = all.get("cobol").unwrap_err().to_string();
        assert!(err.contains("go, java, node, python, rust, zig"), "{err}");
    }
}

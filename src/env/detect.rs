//! What a project's environment is made from: per language, the manifests
//! that determine it (hashed into the cache key) and the install step a
//! user would type, read from those manifests.
//!
//! Installed dependencies go under [`ENV_ROOT`], outside `/workspace`
//! (which every run replaces), where the language finds them through its
//! normal search paths: the python image's virtual environment, Go's
//! module cache, a vendored-crates source that `/.cargo/config.toml` names,
//! and `/node_modules`, which Node looks in from any folder below `/`.

use std::path::{Path, PathBuf};

/// Where a set-up puts what it installs; the images make it the run user's.
pub const ENV_ROOT: &str = "/opt/autodev-env";

/// What one language needs around its install step.
#[derive(Debug)]
pub struct Lang {
    /// The profile it serves.
    pub profile: &'static str,
    /// Manifests in the project root (glob-free names, or a `*` prefix/suffix).
    manifests: &'static [&'static str],
    /// Folders one level down whose files matching the pattern count too
    /// (`*` for every folder, with the root's patterns).
    nested: &'static [(&'static str, &'static str)],
    /// Reads the install step from the manifests, if there is anything to install.
    detect: fn(&Path, &[PathBuf]) -> Option<String>,
    /// Shell run before the install step (sets variables it uses).
    pub before: &'static str,
    /// Shell run after it (moves what it made to where runs find it).
    pub after: &'static str,
    /// Variables the set-up container gets (never the committed image).
    pub setup_env: &'static [(&'static str, &'static str)],
    /// Prints, one per line, the URLs the image's package tools are
    /// configured to fetch from (their configuration or built-in default).
    pub probe: &'static str,
}

/// The languages set-up knows; Java is absent on purpose: its image has
/// no Maven or Gradle, so there is no install step to detect (`--setup`
/// still runs a command of the user's).
pub const LANGS: &[Lang] = &[
    Lang {
        profile: "python",
        manifests: &[
            "requirements*.txt",
            "constraints*.txt",
            "pyproject.toml",
            "setup.py",
            "setup.cfg",
            "poetry.lock",
            "Pipfile.lock",
            "pdm.lock",
            "uv.lock",
        ],
        nested: &[("requirements", "*.txt")],
        detect: detect_python,
        before: "",
        after: "",
        setup_env: &[
            ("PIP_NO_INPUT", "1"),
            ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
            ("PIP_PROGRESS_BAR", "off"),
            ("PIP_NO_CACHE_DIR", "1"),
        ],
        probe: r#"python3 - <<'PY'
import configparser, os, subprocess
try:
    out = subprocess.run(["python3", "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        k, _, v = line.partition("=")
        if k.endswith(("index-url", "extra-index-url", "find-links")):
            for u in v.strip().strip("'\"").split():
                print(u)
except Exception:
    pass
try:
    from pip._internal.models.index import PyPI
    print(PyPI.url)
    print("https://" + PyPI.file_storage_domain + "/")
except Exception:
    pass
PY"#,
    },
    Lang {
        profile: "node",
        manifests: &[
            "package.json",
            "package-lock.json",
            "npm-shrinkwrap.json",
            "yarn.lock",
            "pnpm-lock.yaml",
            ".npmrc",
        ],
        nested: &[],
        detect: detect_node,
        before: "",
        after: "if [ -d node_modules ]; then mv node_modules /opt/autodev-env/node_modules; fi",
        setup_env: &[("NPM_CONFIG_OFFLINE", "false"), ("NODE_ENV", "development")],
        probe: "command -v npm >/dev/null && npm config get registry; \
                command -v yarn >/dev/null && yarn config get registry; true",
    },
    Lang {
        profile: "go",
        manifests: &["go.mod", "go.sum"],
        nested: &[],
        detect: detect_go,
        // The image turns the module proxy off for test runs; set-up uses
        // the one the toolchain (or its `go env -w` file) is configured with.
        before: "p=$(go env GOPROXY); [ \"$p\" != off ] || p=$(env -u GOPROXY go env GOPROXY); \
                 [ -n \"${AUTODEV_GOPROXY:-}\" ] && p=$AUTODEV_GOPROXY; export GOPROXY=\"$p\"",
        after: "",
        setup_env: &[("GOFLAGS", "-modcacherw")],
        probe: "p=$(go env GOPROXY); [ \"$p\" != off ] || p=$(env -u GOPROXY go env GOPROXY); \
                echo \"$p\" | tr ',|' '\\n\\n'",
    },
    Lang {
        profile: "rust",
        manifests: &["Cargo.toml", "Cargo.lock", "rust-toolchain", "rust-toolchain.toml"],
        nested: &[("*", "")],
        detect: detect_rust,
        // Cargo before 1.68 reaches the registry only through its git
        // index unless told to use the sparse protocol (unstable then).
        before: "z=; if cargo -Z help 2>&1 | grep -q sparse-registry; then \
                 z='-Z sparse-registry'; export RUSTC_BOOTSTRAP=1; fi; mkdir -p /opt/autodev-env/cargo",
        after: "",
        setup_env: &[("CARGO_NET_OFFLINE", "false")],
        probe: "for f in \"${CARGO_HOME:-$HOME/.cargo}/config.toml\" \"${CARGO_HOME:-$HOME/.cargo}/config\"; do \
                [ -r \"$f\" ] && grep -Eo '(registry|index) *= *\"[^\"]+\"' \"$f\" | sed 's/.*\"\\(.*\\)\"/\\1/'; done; \
                grep -ao 'sparse+https://[A-Za-z0-9.-]*/' \"$(command -v cargo)\" | head -n 1 | sed 's/^sparse+//'; true",
    },
];

/// The language set-up knows for `profile`.
pub fn lang(profile: &str) -> Option<&'static Lang> {
    LANGS.iter().find(|l| l.profile == profile)
}

impl Lang {
    /// The manifests present in `root`, relative to it, sorted.
    pub fn manifests(&self, root: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut scan = |dir: &Path, rel: &Path, only: &str| {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                // A link could name a file outside the project: never read it.
                let is_file = e.file_type().is_ok_and(|t| t.is_file());
                let wanted = if only.is_empty() {
                    self.manifests.iter().any(|p| glob(p, name))
                } else {
                    glob(only, name)
                };
                if is_file && wanted {
                    found.push(rel.join(name));
                }
            }
        };
        scan(root, Path::new(""), "");
        for (n, only) in self.nested {
            if *n == "*" {
                let Ok(rd) = std::fs::read_dir(root) else {
                    continue;
                };
                let mut dirs: Vec<_> = rd
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| !n.starts_with('.') && n != "target" && n != "node_modules")
                    .collect();
                dirs.sort();
                for d in dirs {
                    scan(&root.join(&d), Path::new(&d), only);
                }
            } else if root.join(n).is_dir() && !root.join(n).is_symlink() {
                scan(&root.join(n), Path::new(n), only);
            }
        }
        found.sort();
        found
    }

    /// The install step the manifests call for, or `None` when they
    /// declare nothing to install.
    pub fn install_step(&self, root: &Path, manifests: &[PathBuf]) -> Option<String> {
        (self.detect)(root, manifests)
    }
}

fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        Some((pre, suf)) => {
            name.len() >= pre.len() + suf.len() && name.starts_with(pre) && name.ends_with(suf)
        }
        None => pattern == name,
    }
}

fn read(root: &Path, rel: &Path) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_default()
}

fn has(manifests: &[PathBuf], name: &str) -> bool {
    manifests.iter().any(|m| m == Path::new(name))
}

/// Quotes `s` for `/bin/sh`.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn detect_python(root: &Path, manifests: &[PathBuf]) -> Option<String> {
    let mut args: Vec<String> = Vec::new();
    for m in manifests {
        let name = m.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let top = m.parent().is_none_or(|p| p.as_os_str().is_empty());
        let wanted = if top {
            name.starts_with("requirements")
        } else {
            name.starts_with("test")
        };
        let declares = read(root, m)
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if wanted && declares {
            args.push(format!("-r {}", q(&m.to_string_lossy())));
        }
    }
    let (deps, extras) = pyproject_deps(&read(root, Path::new("pyproject.toml")));
    let setup_cfg = read(root, Path::new("setup.cfg"));
    let declared = deps
        || !extras.is_empty()
        || setup_cfg.contains("install_requires")
        || read(root, Path::new("setup.py")).contains("install_requires");
    if declared
        && (has(manifests, "pyproject.toml")
            || has(manifests, "setup.py")
            || has(manifests, "setup.cfg"))
    {
        // Editable, so the installed project is the copy in /workspace of
        // each run, never a snapshot the cache would keep.
        if extras.is_empty() {
            args.push("-e .".into());
        } else {
            args.push(format!("-e {}", q(&format!(".[{}]", extras.join(",")))));
        }
    }
    (!args.is_empty()).then(|| format!("pip install {}", args.join(" ")))
}

/// Whether `pyproject.toml` declares dependencies, and its test extras.
fn pyproject_deps(text: &str) -> (bool, Vec<String>) {
    let Ok(doc) = text.parse::<toml_edit::DocumentMut>() else {
        return (false, Vec::new());
    };
    let Some(project) = doc.get("project") else {
        return (false, Vec::new());
    };
    let deps = project
        .get("dependencies")
        .and_then(|d| d.as_array())
        .is_some_and(|a| !a.is_empty());
    let mut extras = Vec::new();
    if let Some(t) = project
        .get("optional-dependencies")
        .and_then(|t| t.as_table_like())
    {
        for (k, _) in t.iter() {
            if matches!(k, "test" | "tests" | "testing" | "dev") {
                extras.push(k.to_string());
            }
        }
    }
    (deps, extras)
}

fn detect_node(root: &Path, manifests: &[PathBuf]) -> Option<String> {
    if has(manifests, "package-lock.json") || has(manifests, "npm-shrinkwrap.json") {
        return Some("npm ci".into());
    }
    if has(manifests, "pnpm-lock.yaml") {
        return Some("pnpm install --frozen-lockfile".into());
    }
    if has(manifests, "yarn.lock") {
        return Some("yarn install --frozen-lockfile".into());
    }
    let pkg: serde_json::Value =
        serde_json::from_str(&read(root, Path::new("package.json"))).ok()?;
    let any = ["dependencies", "devDependencies", "optionalDependencies"]
        .iter()
        .any(|k| pkg[k].as_object().is_some_and(|o| !o.is_empty()));
    any.then(|| "npm install".into())
}

fn detect_go(root: &Path, manifests: &[PathBuf]) -> Option<String> {
    if root.join("vendor/modules.txt").is_file() {
        return None;
    }
    let requires = read(root, Path::new("go.mod"))
        .lines()
        .any(|l| l.trim_start().starts_with("require"));
    (has(manifests, "go.mod") && requires).then(|| "go mod download".into())
}

fn detect_rust(root: &Path, manifests: &[PathBuf]) -> Option<String> {
    let toml = read(root, Path::new("Cargo.toml"));
    let doc = toml.parse::<toml_edit::DocumentMut>().ok()?;
    let section_used = |d: &toml_edit::DocumentMut| {
        ["dependencies", "dev-dependencies", "build-dependencies"]
            .iter()
            .any(|k| {
                d.get(k)
                    .and_then(|t| t.as_table_like())
                    .is_some_and(|t| !t.is_empty())
            })
    };
    let members = manifests
        .iter()
        .filter(|m| m.file_name().is_some_and(|n| n == "Cargo.toml") && m.components().count() > 1)
        .filter_map(|m| read(root, m).parse::<toml_edit::DocumentMut>().ok())
        .any(|d| section_used(&d));
    if !(section_used(&doc) || members || doc.get("workspace").is_some()) {
        return None;
    }
    let locked = if has(manifests, "Cargo.lock") {
        " --locked"
    } else {
        ""
    };
    // Vendored, and named in /.cargo/config.toml: test runs build offline
    // from a read-only copy, with no cache that cargo would want to lock.
    Some(format!(
        "cargo $z vendor{locked} /opt/autodev-env/cargo/vendor > /opt/autodev-env/cargo/config.toml"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let path = d.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        d
    }

    fn step(profile: &str, files: &[(&str, &str)]) -> (Vec<String>, Option<String>) {
        let d = project(files);
        let l = lang(profile).unwrap();
        let m = l.manifests(d.path());
        let s = l.install_step(d.path(), &m);
        (
            m.iter().map(|p| p.to_string_lossy().into_owned()).collect(),
            s,
        )
    }

    #[test]
    fn python_installs_requirements_and_the_project_editable_with_its_test_extras() {
        let (m, s) = step(
            "python",
            &[
                ("requirements.txt", "# pins\nrequests==2.32.3\n"),
                ("requirements/tests.txt", "pytest\n"),
                ("requirements/docs.txt", "sphinx\n"),
                ("pyproject.toml", "[project]\nname='x'\ndependencies=['click']\n[project.optional-dependencies]\ntests=['pytest']\nfast=['x']\n"),
                ("src/x/__init__.py", ""),
            ],
        );
        assert_eq!(
            m,
            [
                "pyproject.toml",
                "requirements/docs.txt",
                "requirements/tests.txt",
                "requirements.txt"
            ]
        );
        assert_eq!(
            s.as_deref(),
            Some("pip install -r 'requirements/tests.txt' -r 'requirements.txt' -e '.[tests]'")
        );
    }

    #[test]
    fn a_project_that_declares_nothing_needs_no_set_up() {
        assert_eq!(step("python", &[("test_x.py", "")]).1, None);
        assert_eq!(
            step("python", &[("requirements.txt", "# none\n\n")]).1,
            None
        );
        assert_eq!(
            step(
                "python",
                &[("pyproject.toml", "[tool.pytest.ini_options]\n")]
            )
            .1,
            None
        );
        assert_eq!(step("go", &[("go.mod", "module x\n\ngo 1.19\n")]).1, None);
        assert_eq!(
            step(
                "rust",
                &[("Cargo.toml", "[package]\nname='x'\n[dependencies]\n")]
            )
            .1,
            None
        );
        assert_eq!(
            step("node", &[("package.json", "{\"name\":\"x\"}")]).1,
            None
        );
    }

    #[test]
    fn go_rust_and_node_steps_follow_their_lockfiles() {
        let (m, s) = step(
            "go",
            &[
                ("go.mod", "module x\nrequire y v1.0.0\n"),
                ("go.sum", "y v1 h1:x\n"),
            ],
        );
        assert_eq!((m.len(), s.as_deref()), (2, Some("go mod download")));
        assert_eq!(
            step(
                "go",
                &[
                    ("go.mod", "module x\nrequire y v1\n"),
                    ("vendor/modules.txt", "")
                ]
            )
            .1,
            None
        );
        let (m, s) = step(
            "rust",
            &[
                (
                    "Cargo.toml",
                    "[workspace]\nmembers=['core']\n[package]\nname='x'\n",
                ),
                ("Cargo.lock", ""),
                (
                    "core/Cargo.toml",
                    "[package]\nname='core'\n[dependencies]\nserde='1'\n",
                ),
                ("target/debug/Cargo.toml", ""),
            ],
        );
        assert_eq!(m, ["Cargo.lock", "Cargo.toml", "core/Cargo.toml"]);
        assert!(s
            .unwrap()
            .starts_with("cargo $z vendor --locked /opt/autodev-env/"));
        assert_eq!(
            step(
                "node",
                &[("package.json", "{}"), ("package-lock.json", "{}")]
            )
            .1
            .as_deref(),
            Some("npm ci")
        );
        assert_eq!(
            step(
                "node",
                &[("package.json", "{\"devDependencies\":{\"a\":\"1\"}}")]
            )
            .1
            .as_deref(),
            Some("npm install")
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_link_named_like_a_manifest_is_not_read() {
        let d = project(&[]);
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("requirements.txt")).unwrap();
        assert!(lang("python").unwrap().manifests(d.path()).is_empty());
    }
}

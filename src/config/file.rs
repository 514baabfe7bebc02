//! Reading one configuration file: TOML, every key known, every value of the
//! right shape, each with the line it came from. What a value means (a size,
//! a duration) is checked by the flag it stands for, in `cli::layered`.

use std::path::{Path, PathBuf};

use toml_edit::{Item, TableLike, Value};

use super::keys::{self, Key, Project};
use crate::profile::ProfilePatch;

/// Largest settings file read (a real one is a few KiB).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Name of a project's configuration file, in its root.
pub const PROJECT_FILE: &str = "autodev.toml";

/// Whose file it is, which decides what it may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The user's own (`$XDG_CONFIG_HOME/autodev/config.toml`): anything.
    User,
    /// A project's `autodev.toml`: see [`keys::Project`].
    Project,
}

/// A value as a file or the environment gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    /// A string or a number, as text.
    Text(String),
    /// A list of strings.
    List(Vec<String>),
    /// true or false.
    Bool(bool),
}

impl Raw {
    /// The value as `config show` prints it.
    pub fn display(&self) -> String {
        match self {
            Raw::Text(t) => t.clone(),
            Raw::List(l) => l.join(", "),
            Raw::Bool(b) => b.to_string(),
        }
    }
}

/// One setting read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The setting.
    pub key: &'static Key,
    /// Its value.
    pub value: Raw,
    /// Line in the file (1-based).
    pub line: usize,
}

/// One file, read and checked.
#[derive(Debug, Clone, Default)]
pub struct FileLayer {
    /// Where it is.
    pub path: PathBuf,
    /// Its settings, in file order.
    pub entries: Vec<Entry>,
    /// Its `[profiles.NAME]` tables.
    pub profiles: Vec<(String, ProfilePatch, usize)>,
}

/// A configuration file that cannot be used: where, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}:{line}: {message}", path.display())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// The line (1-based; 0 when the whole file is at fault).
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl FileLayer {
    /// Reads `path`; `Ok(None)` when there is no such file. A file over
    /// [`MAX_FILE_BYTES`] is refused before it is read.
    pub fn read(path: &Path, scope: Scope) -> Result<Option<FileLayer>, FileError> {
        let fail = |message: String| FileError {
            path: path.to_path_buf(),
            line: 0,
            message,
        };
        // A project file comes with code nobody read: only a plain file
        // counts, never a link (to a file elsewhere, or to a device). The
        // user's own may be a link, to a plain file. Checked before opening:
        // opening a pipe would wait for a writer.
        let meta = match scope {
            Scope::Project => std::fs::symlink_metadata(path),
            Scope::User => std::fs::metadata(path),
        };
        match meta {
            Ok(m) if !m.file_type().is_file() => {
                return Err(fail(
                    "is not a regular file (a link, a device, a pipe or a folder): settings are read only from a plain file; remove it or replace it with one".into(),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            _ => {}
        }
        let read = std::fs::File::open(path).and_then(|f| {
            let len = f.metadata()?.len();
            if len > MAX_FILE_BYTES {
                return Err(std::io::Error::other(format!(
                    "it is {len} bytes; a settings file is at most {MAX_FILE_BYTES}"
                )));
            }
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut std::io::Read::take(f, MAX_FILE_BYTES + 1),
                &mut text,
            )?;
            Ok(text)
        });
        match read {
            Ok(text) => Self::parse(path, &text, scope).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FileError {
                path: path.to_path_buf(),
                line: 0,
                message: format!("cannot read it: {e}"),
            }),
        }
    }

    /// Parses `text`, the contents of `path`.
    pub fn parse(path: &Path, text: &str, scope: Scope) -> Result<FileLayer, FileError> {
        let line_of = |span: Option<std::ops::Range<usize>>| {
            span.map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            })
        };
        let fail = |line: usize, message: String| FileError {
            path: path.to_path_buf(),
            line,
            message,
        };
        let doc = toml_edit::Document::parse(text).map_err(|e| {
            fail(
                line_of(e.span()),
                format!("not valid TOML: {}", e.message().trim()),
            )
        })?;
        let mut layer = FileLayer {
            path: path.to_path_buf(),
            ..FileLayer::default()
        };
        let root = doc.as_table();
        for (name, item) in root.iter() {
            let line = line_of(root.key(name).and_then(|k| k.span()));
            if name == "profiles" {
                let table = item.as_table_like().ok_or_else(|| {
                    fail(
                        line,
                        "profiles must be a table of [profiles.NAME] tables".into(),
                    )
                })?;
                for (pname, pitem) in table.iter() {
                    let pline = line_of(table.key(pname).and_then(|k| k.span()));
                    let t = pitem
                        .as_table_like()
                        .ok_or_else(|| fail(pline, format!("profiles.{pname} must be a table")))?;
                    let patch = profile_patch(t, pname, &line_of, &fail)?;
                    layer.profiles.push((pname.to_string(), patch, pline));
                }
                continue;
            }
            if let Some(k) = keys::by_name(name) {
                layer.push(k, item, line, scope, &fail)?;
                continue;
            }
            let Some(table) = item
                .as_table_like()
                .filter(|_| keys::sections().contains(&name))
            else {
                return Err(fail(
                    line,
                    format!(
                        "unknown key {name:?}; valid at the top: {}",
                        keys::sections().join(", ")
                    ),
                ));
            };
            for (sub, sitem) in table.iter() {
                let sline = line_of(table.key(sub).and_then(|k| k.span()));
                let full = format!("{name}.{sub}");
                let k = keys::by_name(&full).ok_or_else(|| {
                    fail(
                        sline,
                        format!(
                            "unknown key {full:?}; valid in [{name}]: {}",
                            keys::in_section(name).join(", ")
                        ),
                    )
                })?;
                layer.push(k, sitem, sline, scope, &fail)?;
            }
        }
        Ok(layer)
    }

    fn push(
        &mut self,
        key: &'static Key,
        item: &Item,
        line: usize,
        scope: Scope,
        fail: &dyn Fn(usize, String) -> FileError,
    ) -> Result<(), FileError> {
        let value = raw(item).ok_or_else(|| {
            fail(
                line,
                format!(
                    "{} must be a string, a number, true/false or a list of strings",
                    key.name
                ),
            )
        })?;
        if scope == Scope::Project {
            let user_file = user_file(&|k| std::env::var(k).ok())
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "your user config file".into());
            let elsewhere = format!(
                "set it in {user_file}, {} or --{}",
                keys::env_var(key),
                key.arg.replace('_', "-")
            );
            match key.project {
                Project::Forbidden(why) => {
                    return Err(fail(
                        line,
                        format!(
                            "{} cannot be set in a project file ({why}): remove the line, or {elsewhere}",
                            key.name
                        ),
                    ))
                }
                Project::Only(only) if value != Raw::Text(only.into()) => {
                    return Err(fail(
                        line,
                        format!(
                            "a project file may only set {} = {only:?}: remove the line, or {elsewhere}",
                            key.name
                        ),
                    ))
                }
                _ => {}
            }
        }
        self.entries.push(Entry { key, value, line });
        Ok(())
    }
}

fn raw(item: &Item) -> Option<Raw> {
    let value = item.as_value()?;
    scalar(value).map(Raw::Text).or_else(|| match value {
        Value::Boolean(b) => Some(Raw::Bool(*b.value())),
        Value::Array(a) => a
            .iter()
            .map(scalar)
            .collect::<Option<Vec<String>>>()
            .map(Raw::List),
        _ => None,
    })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.value().clone()),
        Value::Integer(i) => Some(i.value().to_string()),
        Value::Float(f) => Some(f.value().to_string()),
        _ => None,
    }
}

fn profile_patch(
    t: &dyn TableLike,
    name: &str,
    line_of: &dyn Fn(Option<std::ops::Range<usize>>) -> usize,
    fail: &dyn Fn(usize, String) -> FileError,
) -> Result<ProfilePatch, FileError> {
    let mut patch = ProfilePatch::default();
    for (field, item) in t.iter() {
        let line = line_of(t.key(field).and_then(|k| k.span()));
        let text = || {
            item.as_value()
                .and_then(scalar)
                .ok_or_else(|| fail(line, format!("profiles.{name}.{field} must be a string")))
        };
        let list = || match raw(item) {
            Some(Raw::List(l)) => Ok(l),
            _ => Err(fail(
                line,
                format!("profiles.{name}.{field} must be a list of strings"),
            )),
        };
        match field {
            "image" => patch.image = Some(text()?),
            "runner" => patch.runner = Some(text()?),
            "junit" => patch.junit = Some(text()?),
            "prompt" => patch.prompt = Some(text()?),
            "exclude" => patch.exclude = Some(list()?),
            "markers" => patch.markers = Some(list()?),
            "extensions" => patch.extensions = Some(list()?),
            other => {
                return Err(fail(
                    line,
                    format!(
                        "unknown key \"profiles.{name}.{other}\"; valid in a profile: {}",
                        keys::PROFILE_FIELDS.join(", ")
                    ),
                ))
            }
        }
    }
    Ok(patch)
}

/// The user's configuration file: `$XDG_CONFIG_HOME/autodev/config.toml`,
/// else `~/.config/autodev/config.toml`.
/// `env` reads the environment.
pub fn user_file(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    crate::dirs::autodev_dir_in(crate::dirs::Base::Config, env).map(|d| d.join("config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_file_must_be_a_plain_file_of_reasonable_size() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(PROJECT_FILE);
        let elsewhere = d.path().join("elsewhere.toml");
        std::fs::write(&elsewhere, "[sandbox]\nmemory = \"256m\"\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &p).unwrap();
        let e = FileLayer::read(&p, Scope::Project).unwrap_err();
        assert!(e.message.contains("not a regular file"), "{e}");
        // The user's own file may be a link.
        assert!(FileLayer::read(&p, Scope::User).unwrap().is_some());
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        assert!(FileLayer::read(&p, Scope::Project).is_err());
        assert!(
            FileLayer::read(&p, Scope::User).is_err(),
            "a device, even for the user"
        );
        std::fs::remove_file(&p).unwrap();
        let fifo = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(
            FileLayer::read(&p, Scope::Project).is_err(),
            "no wait on a pipe"
        );
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, "#".repeat(MAX_FILE_BYTES as usize + 1)).unwrap();
        let e = FileLayer::read(&p, Scope::Project).unwrap_err();
        assert!(e.message.contains("at most"), "{e}");
        std::fs::remove_file(&p).unwrap();
        assert!(FileLayer::read(&p, Scope::Project).unwrap().is_none());
    }

    fn parse(text: &str, scope: Scope) -> Result<FileLayer, FileError> {
        FileLayer::parse(Path::new("c.toml"), text, scope)
    }

    #[test]
    fn sections_dotted_keys_and_profiles_are_read_with_lines() {
        let l = parse(
            "profile = \"go\"\n\n[sandbox]\nmemory = \"1g\"\ncpus = 0.5\npids = 64\nexclude = [\"a/\", \"b\"]\n\
             include_git = true\n[run]\nmax_iters = 3\n[profiles.go]\nimage = \"corp/go\"\n",
            Scope::User,
        )
        .unwrap();
        let got: Vec<(&str, Raw, usize)> = l
            .entries
            .iter()
            .map(|e| (e.key.name, e.value.clone(), e.line))
            .collect();
        assert_eq!(
            got,
            [
                ("profile", Raw::Text("go".into()), 1),
                ("sandbox.memory", Raw::Text("1g".into()), 4),
                ("sandbox.cpus", Raw::Text("0.5".into()), 5),
                ("sandbox.pids", Raw::Text("64".into()), 6),
                (
                    "sandbox.exclude",
                    Raw::List(vec!["a/".into(), "b".into()]),
                    7
                ),
                ("sandbox.include_git", Raw::Bool(true), 8),
                ("run.max_iters", Raw::Text("3".into()), 10),
            ]
        );
        assert_eq!(l.profiles[0].0, "go");
        assert_eq!(l.profiles[0].1.image.as_deref(), Some("corp/go"));
        let dotted = parse("sandbox.memory = \"2g\"\n", Scope::User).unwrap();
        assert_eq!(dotted.entries[0].key.name, "sandbox.memory");
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_file_line_and_valid_keys() {
        let e = parse("[sandbox]\ncpus = 1\nmemroy = \"1g\"\n", Scope::User).unwrap_err();
        assert_eq!(e.line, 3);
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "c.toml:3: unknown key \"sandbox.memroy\"; valid in [sandbox]: image, cpus, memory"
            ),
            "{msg}"
        );
        let e = parse("\n\nsandbx = 1\n", Scope::User).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(
            e.message
                .contains("valid at the top: profile, sandbox, setup, engines"),
            "{e}"
        );
        let e = parse("[sandbox]\nmemory = { a = 1 }\n", Scope::User).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("must be a string"), "{e}");
        let e = parse("[sandbox\n", Scope::User).unwrap_err();
        assert!(e.message.starts_with("not valid TOML"), "{e}");
        assert_eq!(e.line, 1);
        let e = parse("[profiles.go]\nimgae = \"x\"\n", Scope::User).unwrap_err();
        assert!(
            e.message.contains("valid in a profile: image, runner"),
            "{e}"
        );
    }

    #[test]
    fn a_project_file_cannot_choose_destinations_secrets_or_isolation() {
        for (text, line) in [
            ("[model]\nbase_url = \"http://evil\"\n", 2),
            ("[engines]\nengine = [\"tcp://evil:2375\"]\n", 2),
            ("[sandbox]\nruntime = \"runc\"\n", 2),
            ("[sandbox]\nenv = [\"OPENAI_API_KEY\"]\n", 2),
            ("[sandbox]\nnetwork = \"bridge\"\n", 2),
            ("[batch]\nallow_task_overrides = true\n", 2),
            ("[model]\nprovider = \"openai\"\n", 2),
        ] {
            let e = parse(text, Scope::Project).unwrap_err();
            assert_eq!(e.line, line, "{text}");
            assert!(e.message.contains("remove the line"), "{e}");
            parse(text, Scope::User).unwrap();
        }
        parse(
            "[sandbox]\nnetwork = \"none\"\nimage = \"x\"\n",
            Scope::Project,
        )
        .unwrap();
    }
}

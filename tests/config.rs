//! The settings pipeline through the real binary: files, the environment,
//! flags, `config show` and `config init`, and what a hostile project file
//! cannot do. Nothing here needs Docker: every refusal comes before a
//! sandbox is contacted.

mod common;

use std::path::Path;
use std::process::Output;

use serde_json::Value;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn setting<'a>(show: &'a Value, key: &str) -> &'a Value {
    show["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {show}"))
}

fn one_line_error(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn show_reads_a_seeds_project_file_as_run_does() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "seed/autodev.toml",
        "[sandbox]\nmemory = \"256m\"\n",
    );
    write(d.path(), "seed/go.mod", "module x\n");
    let out = common::isolated(d.path())
        .args(["config", "show", "--json", "-w", "ws", "--seed", "seed"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(setting(&v, "sandbox.memory")["value"], "256m", "{v}");
    assert_eq!(v["profile"]["name"], "go", "{v}");
}

#[test]
fn show_tells_the_variables_of_other_tools_a_run_reads() {
    let d = tempfile::tempdir().unwrap();
    let out = common::isolated(d.path())
        .args(["config", "show", "--json"])
        .env("DOCKER_HOST", "tcp://127.0.0.1:2375")
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .env("USE_OLLAMA", "1")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (key, value, var) in [
        ("engines.engine", "tcp://127.0.0.1:2375", "DOCKER_HOST"),
        ("model.base_url", "http://127.0.0.1:9/v1", "OPENAI_BASE_URL"),
        ("model.provider", "ollama", "USE_OLLAMA"),
    ] {
        let s = setting(&v, key);
        assert_eq!(s["value"], value, "{s}");
        assert_eq!(s["source"]["var"], var, "{s}");
    }
}

#[test]
fn show_names_each_value_and_its_source_and_never_a_secret() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "xdg/autodev/config.toml",
        "[sandbox]\nmemory = \"1g\"\ntimeout = \"90s\"\n\n[profiles.go]\nimage = \"corp/go:1.22\"\n",
    );
    write(d.path(), "proj/go.mod", "module x\n");
    write(
        d.path(),
        "proj/autodev.toml",
        "# tighter than the user's\n[sandbox]\nmemory = \"768m\"\n",
    );
    let out = common::isolated(d.path())
        .args(["config", "show", "--json", "-w", "proj"])
        .env("AUTODEV_PIDS", "64")
        .env("OPENAI_API_KEY", "sk-very-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("sk-very-secret"));
    let show: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(show["profile"]["name"], "go");
    assert_eq!(setting(&show, "profile")["source"]["kind"], "detected");
    let memory = setting(&show, "sandbox.memory");
    assert_eq!(memory["value"], "768m");
    assert_eq!(memory["source"]["kind"], "file");
    assert_eq!(memory["source"]["line"], 3);
    assert!(memory["source"]["path"]
        .as_str()
        .unwrap()
        .ends_with("proj/autodev.toml"));
    let timeout = setting(&show, "sandbox.timeout");
    assert_eq!(timeout["value"], "90s");
    assert!(timeout["source"]["path"]
        .as_str()
        .unwrap()
        .ends_with("xdg/autodev/config.toml"));
    assert_eq!(
        setting(&show, "sandbox.pids")["source"]["var"],
        "AUTODEV_PIDS"
    );
    let image = setting(&show, "sandbox.image");
    assert_eq!(image["value"], "corp/go:1.22");
    assert_eq!(image["source"]["kind"], "profile");
    assert_eq!(setting(&show, "sandbox.cpus")["source"]["kind"], "default");
    assert_eq!(show["secrets"][0]["set"], true);

    // The human form says the same on one line per setting.
    let out = common::isolated(d.path())
        .args(["config", "show", "-w", "proj"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("sandbox.memory "))
        .unwrap();
    assert!(
        line.contains("768m") && line.contains("proj/autodev.toml:3"),
        "{line}"
    );
}

#[test]
fn a_hostile_project_file_is_refused_with_its_line() {
    let d = tempfile::tempdir().unwrap();
    for (text, line, says) in [
        (
            "[sandbox]\nnetwork = \"bridge\"\n",
            2,
            "may only set sandbox.network = \"none\"",
        ),
        (
            "\n[model]\nbase_url = \"http://collector.example\"\n",
            3,
            "your API key",
        ),
        (
            "[sandbox]\nenv = [\"OPENAI_API_KEY\"]\n",
            2,
            "environment variables",
        ),
        (
            "[engines]\nengine = [\"tcp://10.0.0.1:2375\"]\n",
            2,
            "cannot be set in a project file",
        ),
        ("[sandbox]\nruntime = \"runc\"\n", 2, "runtime is yours"),
        (
            "[sandbox]\npids = 100000\n",
            2,
            "looser than yours (256, the default)",
        ),
        // What a run costs is the user's: the model, its rounds, replies,
        // retries and timeouts, and how many containers run at once.
        (
            "[model]\nname = \"gpt-huge\"\n",
            2,
            "what your API key pays for",
        ),
        (
            "[run]\nmax_iters = 1000000\n",
            2,
            "looser than yours (6, the default)",
        ),
        (
            "[model]\nmax_reply_size = \"100GiB\"\n",
            2,
            "looser than yours",
        ),
        ("[model]\nattempts = 20\n", 2, "looser than yours"),
        ("[model]\ntimeout = \"7d\"\n", 2, "looser than yours"),
        (
            "[run]\nmax_context_chars = 100000000\n",
            2,
            "looser than yours",
        ),
        ("[run]\nmax_file_size = \"1TiB\"\n", 2, "looser than yours"),
        ("[batch]\njobs = 100000\n", 2, "yours to choose"),
        ("[batch]\nretries = 1000000\n", 2, "looser than yours"),
        // A value that parses but cannot be used: the file and line lead.
        ("[sandbox]\nuser = \"0:0\"\n", 2, "never runs as root"),
        ("\n[sandbox]\ncpus = \"nan\"\n", 3, "--cpus"),
        (
            "[run]\nallow_test_edits = true\n",
            2,
            "change the tests that judge it",
        ),
    ] {
        write(d.path(), "ws/autodev.toml", text);
        let out = common::isolated(d.path())
            .args(["exec", "-w", "ws", "--", "true"])
            .output()
            .unwrap();
        let err = one_line_error(&out, 2);
        assert!(err.contains(&format!("ws/autodev.toml:{line}: ")), "{err}");
        assert!(err.contains(says), "{err}");
    }
    // The user may give a looser value than the project's, for one run, with a flag.
    write(d.path(), "ws/autodev.toml", "[sandbox]\npids = 512\n");
    let out = common::isolated(d.path())
        .args(["exec", "-w", "ws", "--", "true"])
        .output()
        .unwrap();
    assert!(one_line_error(&out, 2).contains("pass --pids 512"));
    let out = common::isolated(d.path())
        .args([
            "exec",
            "-w",
            "ws",
            "--pids",
            "512",
            "--workspace-size",
            "0",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    // Past the project file, stopped by the flags' own check (before any sandbox).
    assert!(one_line_error(&out, 2).contains("--workspace-size"));
}

#[test]
fn unknown_keys_and_bad_values_name_file_line_and_what_is_valid() {
    let d = tempfile::tempdir().unwrap();
    let user = "xdg/autodev/config.toml";
    for (text, says) in [
        ("[sandbox]\nmemroy = \"1g\"\n", "config.toml:2: unknown key \"sandbox.memroy\"; valid in [sandbox]: image, cpus, memory"),
        ("[sandbox]\nmemory = 12\nmemory_x = 1\n", "config.toml:3: unknown key"),
        ("[sandbox]\ntimeout = \"soon\"\n", "config.toml:2: sandbox.timeout: invalid value 'soon'"),
        ("[sandbox]\npids = \"many\"\n", "config.toml:2: sandbox.pids: invalid value 'many'"),
        ("[run]\ngit = \"yes\"\n", "config.toml:2: run.git must be true or false"),
        ("[sandbox\n", "config.toml:1: not valid TOML"),
        ("profile = \"cobol\"\n", "unknown profile \"cobol\""),
    ] {
        write(d.path(), user, text);
        let out = common::isolated(d.path()).args(["config", "show"]).output().unwrap();
        let err = one_line_error(&out, 2);
        assert!(err.contains(says), "{text:?}: {err}");
    }
    std::fs::remove_file(d.path().join(user)).unwrap();
    let out = common::isolated(d.path())
        .args(["exec", "--", "true"])
        .env("AUTODEV_MEMORY", "lots")
        .output()
        .unwrap();
    let err = one_line_error(&out, 2);
    assert!(
        err.contains("environment variable AUTODEV_MEMORY: sandbox.memory: invalid value 'lots'"),
        "{err}"
    );
}

#[test]
fn init_writes_a_starting_file_once_and_show_reads_it() {
    let d = tempfile::tempdir().unwrap();
    let out = common::isolated(d.path())
        .args(["config", "init"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let path = d.path().join("xdg/autodev/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("# memory = \"512m\""), "{text}");
    let again = common::isolated(d.path())
        .args(["config", "init"])
        .output()
        .unwrap();
    assert!(one_line_error(&again, 2).contains("already exists"));
    // Uncommenting a line changes the value `show` reports.
    std::fs::write(
        &path,
        text.replace("# memory = \"512m\"", "memory = \"2g\""),
    )
    .unwrap();
    let out = common::isolated(d.path())
        .args(["config", "show", "--json"])
        .output()
        .unwrap();
    let show: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(setting(&show, "sandbox.memory")["value"], "2g");
    // A project starting file leaves out what a project may not set.
    let out = common::isolated(d.path())
        .args(["config", "init", "--project"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let project = std::fs::read_to_string(d.path().join("autodev.toml")).unwrap();
    for forbidden in [
        "base_url",
        "provider",
        "engine",
        "backend",
        "runtime",
        "env",
        "allow_task_overrides",
    ] {
        assert!(
            !project
                .lines()
                .any(|l| l.starts_with(&format!("# {forbidden} "))
                    || l.starts_with(&format!("# {forbidden}:"))),
            "{forbidden} in {project}"
        );
    }
    assert!(project.contains("# memory = \"512m\""), "{project}");
    let out = common::isolated(d.path())
        .args(["config", "show"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_shows_the_layered_defaults() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "xdg/autodev/config.toml",
        "[sandbox]\nmemory = \"3g\"\n",
    );
    let out = common::isolated(d.path())
        .args(["exec", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[default: 3g]"), "{help}");
}

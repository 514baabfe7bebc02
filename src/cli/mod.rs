//! Command-line interface: clap definitions only; `app` does the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use autodev::sandbox::kube::PullPolicy;

mod layered;
mod mcp;
mod parse;
mod sandbox;
mod serve;
mod setup;
pub use mcp::McpArgs;
pub use serve::{KeysCommand, ServeArgs, ServeCommand};
pub use setup::SetupArgs;

use autodev::batch::TaskVerdict;
pub(crate) use layered::{built as built_command, find_arg};
pub use layered::{load, LoadError, Loaded, Origin, ProfileChoice, Settings, Source};
pub use parse::one_line;
use parse::{duration, label_filter, size, verdict};
pub use sandbox::{Backend, EngineArgs, SandboxArgs};

pub use autodev::exit;

impl Command {
    /// The sandbox flags of a subcommand that runs code.
    pub fn sandbox_args(&self) -> Option<&SandboxArgs> {
        match self {
            Command::Run(a) => Some(&a.sandbox),
            Command::Exec(a) => Some(&a.sandbox),
            Command::Batch(a) => Some(&a.sandbox),
            Command::Doctor(a) => Some(&a.sandbox),
            Command::Pool(a) => Some(&a.sandbox),
            Command::Serve(a) => Some(&a.sandbox),
            Command::Mcp(a) => Some(&a.sandbox),
            Command::Env(EnvCommand::Build(a)) => Some(&a.sandbox),
            _ => None,
        }
    }

    /// The engines (or cluster) the subcommand talks to: where a signal's
    /// clean-up looks for what it started.
    pub fn engines(&self) -> EngineArgs {
        if let Some(s) = self.sandbox_args() {
            return s.engines.clone();
        }
        match self {
            Command::Images(
                ImagesCommand::Build { engines, .. }
                | ImagesCommand::Push { engines, .. }
                | ImagesCommand::List { engines, .. },
            )
            | Command::Env(
                EnvCommand::List { engines, .. }
                | EnvCommand::Show { engines, .. }
                | EnvCommand::Prune { engines, .. },
            )
            | Command::Clean { engines, .. } => engines.clone(),
            // What `kube setup`'s probe pods leave is cleaned where they ran.
            Command::Kube(KubeCommand::Setup { namespace, .. }) => EngineArgs {
                backend: Backend::Kubernetes,
                namespace: Some(namespace.clone()),
                ..EngineArgs::default()
            },
            _ => EngineArgs::default(),
        }
    }
}

/// Let a language model write and repair code; run every line of it in a locked-down container.
#[derive(Debug, Parser)]
#[command(name = "autodev", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask a model for code, test it in the sandbox, feed failures back until the tests pass.
    Run(Box<RunArgs>),
    /// Run a command on a workspace in a fresh locked-down container.
    #[command(mut_arg("warm", |a| a.hide(true)))]
    Exec(ExecArgs),
    /// Evaluate many tasks (JSON Lines) in parallel, one fresh container each.
    Batch(BatchArgs),
    /// Build and manage sandbox images.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Dependency environments: build one for a project, list, show and prune them.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Prove, on this host, each guarantee of the sandbox as configured (memory, processes,
    /// timeout, network, read-only root, privileges, environment, output, clean-up).
    #[command(mut_arg("exclude", |a| a.hide(true)), mut_arg("include_git", |a| a.hide(true)), mut_arg("junit", |a| a.hide(true)), mut_arg("no_default_excludes", |a| a.hide(true)), mut_arg("warm", |a| a.hide(true)), mut_arg("registry", |a| a.hide(true)))]
    Doctor(DoctorArgs),
    /// Show the effective settings and where each comes from, or write a starting config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Kubernetes: prepare a namespace for runs.
    #[command(subcommand)]
    Kube(KubeCommand),
    /// Keep sandboxes started ahead for other autodev processes (`exec --pool-socket`) of
    /// this user: each still serves one run only. Runs until Ctrl-C or SIGTERM.
    Pool(PoolArgs),
    /// Serve runs to programs over HTTP: API keys, quotas, fair queueing, streamed output,
    /// usage and metrics. Runs until SIGTERM, which drains it.
    Serve(Box<ServeArgs>),
    /// An MCP server on stdin/stdout for coding agents: run_tests, exec, read_file, write_file,
    /// list_files on one folder, every call in a fresh locked-down container.
    Mcp(Box<McpArgs>),
    /// Remove containers left behind by a crashed run (all of autodev's, or those with --label).
    #[command(mut_arg("warm", |a| a.hide(true)), mut_arg("image_pull_policy", |a| a.hide(true)), mut_arg("registry", |a| a.hide(true)))]
    Clean {
        /// Only containers that also carry this label KEY=VALUE (e.g. autodev.run=ID); repeatable.
        #[arg(long = "label", value_parser = label_filter)]
        label: Vec<(String, String)>,
        /// Also look here for scratch folders of dead batch processes (besides the system temp folder).
        #[arg(long)]
        scratch: Option<PathBuf>,
        /// The engines to clean (every one given).
        #[command(flatten)]
        engines: EngineArgs,
    },
}

/// `autodev pool`.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// Unix socket to listen on (made readable and writable by this user only).
    #[arg(long)]
    pub socket: PathBuf,
    /// Where containers run, and the image and limits of those started ahead (runs asking
    /// for other limits are served too, by containers started when they come).
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// `autodev exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Folder copied into /workspace (the host copy is never touched).
    #[arg(long, short = 'w', default_value = ".")]
    pub workspace: PathBuf,
    /// Have the `autodev pool` listening on this socket carry out the run, in a container it
    /// started ahead (the pool's engines are used; --engine and --backend do not apply).
    #[arg(long, env = "AUTODEV_POOL_SOCKET", conflicts_with_all = ["engine", "backend"])]
    pub pool_socket: Option<PathBuf>,
    /// Print one JSON object with the verdict and captured output instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// Limits and isolation.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// The dependency environment.
    #[command(flatten)]
    pub setup: SetupArgs,
    /// Run again what this result ran (an `exec --json` object or a batch result line):
    /// same image ID, limits and command, on --workspace; says whether verdict and output match.
    #[arg(long, conflicts_with = "command")]
    pub rerun: Option<PathBuf>,
    /// Command run in /workspace: one argument runs with /bin/sh -c; several run as given, without a shell.
    #[arg(last = true, required_unless_present = "rerun", num_args = 1..)]
    pub command: Vec<String>,
}

/// Which iteration's files a run ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Keep {
    /// The last iteration's (as the model left them).
    Last,
    /// The best tested iteration's, if the last one is worse.
    Best,
}

/// Model provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    /// OpenAI-compatible chat completions (OPENAI_API_KEY, --base-url).
    Openai,
    /// Ollama's HTTP API (OLLAMA_HOST).
    Ollama,
    /// Scripted replies from --replay FILE.
    Replay,
}

/// `autodev run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task, or @FILE to read it from a file.
    #[arg(long)]
    pub task: String,
    /// Test command, run with /bin/sh -c in the sandbox (e.g. "python3 -m pytest -q")
    /// [default: the profile's].
    #[arg(long)]
    pub runner: Option<String>,
    /// Workspace folder on the host (created if missing).
    #[arg(long, short = 'w', default_value = "workspace")]
    pub workspace: PathBuf,
    /// Copy this folder's files into the workspace before starting (after --reset).
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// Model name (default: gpt-4o-mini; with Ollama: OLLAMA_MODEL or llama3.1).
    #[arg(long)]
    pub model: Option<String>,
    /// Model calls at most (the first reply and the repairs); the tests run after each.
    #[arg(long, default_value_t = autodev::agent::DEFAULT_MAX_ITERS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_iters: u32,
    /// Delete the workspace first: only a folder autodev created, or an empty one.
    #[arg(long)]
    pub reset: bool,
    /// With --reset, also delete a non-empty folder autodev did not create (never /, a
    /// top-level folder, your home, the current folder or their ancestors, or a git repository).
    #[arg(long)]
    pub force_reset: bool,
    /// Export the final workspace to this zip file.
    #[arg(long, default_value = "final_workspace.zip")]
    pub zip: PathBuf,
    /// Do not export a zip file.
    #[arg(long, conflicts_with = "zip")]
    pub no_zip: bool,
    /// Commit the workspace to its own git repository after each applied patch set.
    #[arg(long)]
    pub git: bool,
    /// With --git, commit only iterations strictly better than the last commit.
    #[arg(long, requires = "git")]
    pub git_only_improving: bool,
    /// At the end keep the best iteration's files (best) or the last one's (last).
    #[arg(long, value_enum, default_value_t = Keep::Last)]
    pub keep: Keep,
    /// Provider (default: replay with --replay, ollama when USE_OLLAMA=1, else openai).
    #[arg(long, value_enum)]
    pub provider: Option<Provider>,
    /// Replay scripted replies from this file (offline, deterministic).
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// Base URL of an OpenAI-compatible API.
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub base_url: Option<String>,
    /// Limit of one model request.
    #[arg(long, default_value = "120s", value_parser = duration("--model-timeout"))]
    pub model_timeout: std::time::Duration,
    /// Largest model reply accepted; a bigger one is refused, not buffered.
    #[arg(long, default_value_t = autodev::model::DEFAULT_MAX_REPLY_BYTES, value_parser = size("--max-reply-size"))]
    pub max_reply_size: u64,
    /// Attempts per model request (429, 5xx, timeouts and connection errors are retried).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub model_attempts: u32,
    /// Characters of file context sent to the model.
    #[arg(long, default_value_t = autodev::agent::DEFAULT_CONTEXT_CHARS)]
    pub max_context_chars: usize,
    /// Characters of failure output sent to the model (head and tail kept).
    #[arg(long, default_value_t = autodev::agent::DEFAULT_FAILURE_CHARS)]
    pub max_failure_chars: usize,
    /// Largest file a patch may write.
    #[arg(long, default_value = "1MiB", value_parser = size("--max-file-size"))]
    pub max_file_size: u64,
    /// How the model sends changes: whole (whole files), blocks (search/replace EDIT blocks),
    /// diff (unified diffs), auto (short files whole, EDIT blocks for long ones); new files
    /// always come whole. Every format keeps the same confinement.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(autodev::agent::EditFormat))]
    pub edit_format: autodev::agent::EditFormat,
    /// Let the model change the project's existing tests and the files that configure or
    /// hook the test runner (conftest.py, pytest.ini, ...); by default they are protected.
    #[arg(long)]
    pub allow_test_edits: bool,
    /// Held-out tests: this folder's files are laid over a copy of the workspace (at their own
    /// paths) and run once the visible tests pass; the model never sees them, and the final
    /// verdict is theirs. Keep the folder outside the workspace.
    #[arg(long, value_name = "DIR")]
    pub holdout: Option<PathBuf>,
    /// With --holdout, run the held-out tests only at the end.
    #[arg(long, requires = "holdout")]
    pub holdout_final_only: bool,
    /// Also protect these paths from the model (gitignore-style glob, from the workspace
    /// root); repeatable.
    #[arg(long = "protect", value_name = "GLOB")]
    pub protect: Vec<String>,
    /// Transcript file (JSON Lines); default: .autodev/runs/ beside the workspace.
    #[arg(long)]
    pub transcript: Option<PathBuf>,
    /// Do not write a transcript.
    #[arg(long, conflicts_with = "transcript")]
    pub no_transcript: bool,
    /// Print only the final summary line.
    #[arg(long, short, conflicts_with = "json")]
    pub quiet: bool,
    /// Print one JSON summary object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Limits and isolation for every test run.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// The dependency environment of every test run (looked up again when a
    /// reply changes a manifest).
    #[command(flatten)]
    pub setup: SetupArgs,
}

/// How many tasks of a batch run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    /// Twice the engines' slots.
    Auto,
    /// This many.
    Fixed(usize),
}

/// `--jobs`: `auto` or a number of at least 1.
fn jobs(v: &str) -> Result<Jobs, String> {
    match v {
        "auto" => Ok(Jobs::Auto),
        n => match n.parse::<usize>() {
            Ok(0) | Err(_) => Err("use auto or a number of at least 1".into()),
            Ok(n) => Ok(Jobs::Fixed(n)),
        },
    }
}

/// `autodev batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Tasks file: one JSON object per line (see docs/batch.md).
    #[arg(required_unless_present = "swebench", conflicts_with = "swebench")]
    pub tasks: Option<PathBuf>,
    /// Evaluate SWE-bench predictions: the dataset's instances (JSON or JSON Lines); see
    /// docs/swebench.md.
    #[arg(long, value_name = "INSTANCES", requires_all = ["predictions", "repos"])]
    pub swebench: Option<PathBuf>,
    /// With --swebench: the predictions (instance_id, model_name_or_path, model_patch).
    #[arg(long, value_name = "FILE", requires = "swebench")]
    pub predictions: Option<PathBuf>,
    /// With --swebench: the folder holding each instance's repository (INSTANCE_ID.tar.gz, or a
    /// git repository or bare mirror named owner__name).
    #[arg(long, value_name = "DIR", requires = "swebench")]
    pub repos: Option<PathBuf>,
    /// With --swebench: install and test commands per repository, for instances without them
    /// ({"owner/name": {"install_cmd": ..., "test_cmd": ..., "language": ...}}).
    #[arg(long, value_name = "FILE", requires = "swebench")]
    pub swebench_specs: Option<PathBuf>,
    /// With --swebench: where the harness-style report goes [default: the results file's name
    /// with .report.json].
    #[arg(long, value_name = "FILE", requires = "swebench")]
    pub report: Option<PathBuf>,
    /// Results file: one JSON line per task, appended as each ends.
    #[arg(long)]
    pub out: PathBuf,
    /// Tasks running at once: a number, or auto (found while the batch runs: it starts at twice
    /// the engines' slots and moves between the slots plus one and four times the slots; one
    /// engine's slots: its CPUs).
    #[arg(long, short = 'j', default_value = "auto", value_parser = jobs)]
    pub jobs: Jobs,
    /// Extra attempts for a task that ends in sandbox_error.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// Tasks prepared ahead (scratch folder, container created) while --jobs run
    /// [default: 1; measured best on a CPU-bound 2-core host].
    #[arg(long)]
    pub prefetch: Option<usize>,
    /// Skip tasks already in the results file (after a crash or Ctrl-C).
    #[arg(long)]
    pub resume: bool,
    /// With --resume, also run again the tasks whose result has one of these verdicts
    /// (sandbox_error results always run again), e.g. --rerun failed,timed_out.
    #[arg(long, value_delimiter = ',', value_parser = verdict, requires = "resume")]
    pub rerun: Vec<TaskVerdict>,
    /// Run again, one at a time, the tasks that timed out while starved of CPU (they used far
    /// less CPU than their wall time allowed: the host was busy, not the code slow).
    #[arg(long)]
    pub retry_starved: bool,
    /// Let task lines loosen the command line's limits (more memory, CPU, time; a
    /// network; another runtime or user). Without it a task may only tighten them.
    #[arg(long)]
    pub allow_task_overrides: bool,
    /// Folder for the tasks' scratch workspaces (default: the system temp folder).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Default limits and isolation (a task's own `limits` override them).
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// The dependency environment of every task (a task line's `setup` replaces the step).
    #[command(flatten)]
    pub setup: SetupArgs,
}

/// `autodev images ...`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Build images from images/NAME/Dockerfile as autodev/NAME:latest (all when NAME is omitted).
    #[command(mut_arg("warm", |a| a.hide(true)), mut_arg("backend", |a| a.hide(true)), mut_arg("namespace", |a| a.hide(true)), mut_arg("image_pull_policy", |a| a.hide(true)), mut_arg("registry", |a| a.hide(true)))]
    Build {
        /// Image folder name, e.g. python.
        name: Option<String>,
        /// Base image passed as ARG BASE (offline hosts: autodev/base:bookworm).
        #[arg(long, env = "AUTODEV_BASE_IMAGE")]
        base: Option<String>,
        /// Folder holding NAME/Dockerfile.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Only print errors.
        #[arg(long, short)]
        quiet: bool,
        /// Build on this engine (the first one given).
        #[command(flatten)]
        engines: EngineArgs,
    },
    /// Copy built images from one engine to the --engine ones through the API (no registry needed).
    #[command(mut_arg("warm", |a| a.hide(true)), mut_arg("backend", |a| a.hide(true)), mut_arg("namespace", |a| a.hide(true)), mut_arg("image_pull_policy", |a| a.hide(true)), mut_arg("registry", |a| a.hide(true)))]
    Push {
        /// Image folder name, e.g. python (all built ones when omitted).
        name: Option<String>,
        /// Engine to copy from (default: DOCKER_HOST, else the local socket).
        #[arg(long)]
        from: Option<String>,
        /// Folder holding NAME/Dockerfile.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Engines to copy to.
        #[command(flatten)]
        engines: EngineArgs,
    },
    /// List the image definitions and whether each is built.
    #[command(mut_arg("warm", |a| a.hide(true)), mut_arg("backend", |a| a.hide(true)), mut_arg("namespace", |a| a.hide(true)), mut_arg("image_pull_policy", |a| a.hide(true)), mut_arg("registry", |a| a.hide(true)))]
    List {
        /// Folder holding NAME/Dockerfile.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// List what each of these engines has.
        #[command(flatten)]
        engines: EngineArgs,
    },
}

/// `autodev env`.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Find or build a project's environment, as `exec` does before its run, and print its
    /// record (JSON).
    #[command(mut_arg("warm", |a| a.hide(true)))]
    Build(Box<EnvBuildArgs>),
    /// List the environments on the engine, least recently used first.
    #[command(mut_arg("warm", |a| a.hide(true)), mut_arg("backend", |a| a.hide(true)), mut_arg("namespace", |a| a.hide(true)), mut_arg("image_pull_policy", |a| a.hide(true)), mut_arg("registry", |a| a.hide(true)))]
    List {
        /// One JSON line per environment.
        #[arg(long)]
        json: bool,
        /// The engine to list.
        #[command(flatten)]
        engines: EngineArgs,
    },
    /// Print one environment's record (JSON): by image tag, image ID or key prefix.
    #[command(mut_arg("warm", |a| a.hide(true)), mut_arg("backend", |a| a.hide(true)), mut_arg("namespace", |a| a.hide(true)), mut_arg("image_pull_policy", |a| a.hide(true)), mut_arg("registry", |a| a.hide(true)))]
    Show {
        /// Tag (autodev-env/python:KEY), image ID, or the start of the key.
        which: String,
        /// The engine to look on.
        #[command(flatten)]
        engines: EngineArgs,
    },
    /// Remove environments, least recently used first, until those left take at most --max-size.
    #[command(mut_arg("warm", |a| a.hide(true)), mut_arg("backend", |a| a.hide(true)), mut_arg("namespace", |a| a.hide(true)), mut_arg("image_pull_policy", |a| a.hide(true)), mut_arg("registry", |a| a.hide(true)))]
    Prune {
        /// What the environments left may take in all (e.g. 10g); 0 removes them all.
        #[arg(long, value_parser = size("--max-size"), default_value = "0")]
        max_size: u64,
        /// The engine to prune.
        #[command(flatten)]
        engines: EngineArgs,
    },
}

/// `autodev env build`.
#[derive(Debug, Args)]
pub struct EnvBuildArgs {
    /// The project whose manifests determine the environment.
    #[arg(long, short = 'w', default_value = ".")]
    pub workspace: PathBuf,
    /// Image, limits and engines, as for `exec`.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// The set-up phase.
    #[command(flatten)]
    pub setup: SetupArgs,
}

/// `autodev doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the findings as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The sandbox to examine: the flags a run would get.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// `autodev config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print each setting's effective value and its source (default, profile, which file and
    /// line, environment variable); secrets are never printed.
    Show {
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
        /// The project folder: where autodev.toml and the language are looked for.
        #[arg(long, short = 'w', default_value = ".")]
        workspace: PathBuf,
        /// The --seed folder of a `run`: its autodev.toml is read after the workspace's,
        /// and the language is detected there, as `run` does.
        #[arg(long)]
        seed: Option<PathBuf>,
    },
    /// Write a commented starting file: the user's config file, or with --project an
    /// autodev.toml in the current folder.
    Init {
        /// Write ./autodev.toml (only the settings a project file may hold).
        #[arg(long)]
        project: bool,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// `autodev kube ...`.
#[derive(Debug, Subcommand)]
pub enum KubeCommand {
    /// Create the namespace and a NetworkPolicy that denies the network to runs without one,
    /// then probe whether the cluster enforces it (the cluster comes from KUBECONFIG).
    Setup {
        /// Namespace to prepare.
        #[arg(long, default_value = autodev::sandbox::kube::DEFAULT_NAMESPACE)]
        namespace: String,
        /// Image of the two probe pods (needs bash and timeout).
        #[arg(long, default_value = autodev::profile::DEFAULT_IMAGE)]
        image: String,
        /// When nodes pull the probe image.
        #[arg(long, value_enum, default_value_t)]
        image_pull_policy: PullPolicy,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_only_the_flags_a_subcommand_uses() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let mut help = |path: &[&str]| {
            let mut c = &mut cli;
            for p in path {
                c = c.find_subcommand_mut(p).unwrap();
            }
            c.render_long_help().to_string()
        };
        assert!(!help(&["exec"]).contains("--warm "));
        assert!(help(&["exec"]).contains("--pool-socket"));
        let doctor = help(&["doctor"]);
        assert!(
            !doctor.contains("--exclude") && !doctor.contains("--junit"),
            "{doctor}"
        );
        for sub in ["build", "push", "list"] {
            let h = help(&["images", sub]);
            assert!(
                !h.contains("--backend") && !h.contains("--warm "),
                "{sub}: {h}"
            );
        }
        assert!(!help(&["clean"]).contains("--image-pull-policy"));
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_parses_limits_and_command() {
        let cli = Cli::try_parse_from([
            "autodev",
            "exec",
            "--memory",
            "128m",
            "--timeout",
            "5s",
            "-e",
            "A=1",
            "--",
            "echo",
            "hi",
        ])
        .unwrap();
        let Command::Exec(a) = cli.command else {
            panic!("not exec")
        };
        let l = a.sandbox.limits().unwrap();
        assert_eq!(l.memory, 128 << 20);
        assert_eq!(l.timeout.as_secs(), 5);
        assert_eq!(a.command, ["echo", "hi"]);
        assert_eq!(a.sandbox.env, [("A".to_string(), "1".to_string())]);
    }

    #[test]
    fn clap_errors_fit_on_one_line() {
        let e = Cli::try_parse_from(["autodev", "run"]).unwrap_err();
        let line = one_line(&e.render().to_string());
        assert!(line.contains("--task"), "{line}");
        assert!(!line.contains('\n') && !line.contains("Usage"), "{line}");
        let e = Cli::try_parse_from(["autodev", "exec", "--cpus", "-1", "--", "true"]);
        let a = match e.unwrap().command {
            Command::Exec(a) => a,
            _ => unreachable!(),
        };
        assert!(a
            .sandbox
            .limits()
            .unwrap_err()
            .to_string()
            .contains("--cpus"));
    }

    #[test]
    fn bad_values_are_refused_by_the_parser() {
        assert!(
            Cli::try_parse_from(["autodev", "exec", "--memory", "lots", "--", "true"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["autodev", "exec", "--network", "host", "--", "true"]).is_err()
        );
    }
}

//! The flags every command that runs code shares: where sandboxes run
//! (backend, engines, cluster) and their limits and isolation.

use std::path::PathBuf;

use clap::Args;

use super::parse::{env_item, label_item, unnamed};
use autodev::config::limits::{Value, LIMITS};
use autodev::config::{ConfigError, Limits};
use autodev::sandbox::kube::{PullPolicy, Registry};
use autodev::sandbox::RunSpec;
use autodev::workspace::{CopyOptions, DEFAULT_EXCLUDES};

/// Where sandboxes run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Docker engines (--engine, DOCKER_HOST or the local socket).
    #[default]
    Docker,
    /// A Kubernetes cluster (KUBECONFIG, or in-cluster settings): one pod per run.
    Kubernetes,
}

/// Which container engines to use.
#[derive(Debug, Clone, Default, Args)]
pub struct EngineArgs {
    /// Where runs go.
    #[arg(long, value_enum, default_value_t)]
    pub backend: Backend,
    /// Kubernetes: the namespace pods go to [default: autodev].
    #[arg(long)]
    pub namespace: Option<String>,
    /// Kubernetes: when nodes pull the image (Never for offline clusters) [default: if-not-present].
    #[arg(long, value_enum)]
    pub image_pull_policy: Option<PullPolicy>,
    /// Kubernetes: the registry, HOST[:PORT][/PATH], that environments built on this host's
    /// engine are pushed to and the nodes pull them from (by digest).
    #[arg(long, value_name = "HOST[:PORT]", value_parser = Registry::parse)]
    pub registry: Option<Registry>,
    /// Docker engine, unix:///path or tcp://host:port, with #slots=N for the runs it takes
    /// at once (default: its CPU count); repeatable. Default: DOCKER_HOST, else the local socket.
    #[arg(long = "engine")]
    pub engine: Vec<String>,
    /// CA certificate for mutual TLS with tcp:// engines (with --tls-cert and --tls-key;
    /// default: DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, as the docker CLI reads them).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate for mutual TLS.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// This client's key for mutual TLS.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Docker: containers kept started ahead, per set of limits, while `run` waits for the
    /// model or a test runs (each used by one run only); 0 starts each when its run comes.
    /// (`--pool` is its older name.)
    #[arg(long, alias = "pool", default_value = "1", value_parser = clap::value_parser!(u8).range(0..=16))]
    pub warm: u8,
}

/// Sandbox limits shared by exec, run and batch.
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Where containers run.
    #[command(flatten)]
    pub engines: EngineArgs,
    /// Language profile: image, test command, copy excludes and model hints (python, node, go,
    /// rust, java, or one a config file defines) [default: detected from the workspace].
    #[arg(long)]
    pub profile: Option<String>,
    /// Image to run in [default: the profile's].
    #[arg(long)]
    pub image: Option<String>,
    /// The limits, one flag per row of `autodev::config::limits::LIMITS`.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// JUnit XML report the test command writes, a path inside the sandbox, read after it
    /// ends for per-test results; `none` to not look. Default: the image's autodev.junit label.
    #[arg(long)]
    pub junit: Option<String>,
    /// Environment variable for the command, KEY=VALUE or KEY (taken from here); repeatable.
    #[arg(long = "env", short = 'e', value_parser = env_item)]
    pub env: Vec<(String, String)>,
    /// Gitignore-style pattern left out of the copy; repeatable (adds to the defaults).
    #[arg(long = "exclude")]
    pub exclude: Vec<String>,
    /// Extra container label KEY=VALUE (e.g. to find a run's container); repeatable.
    #[arg(long = "label", value_parser = label_item)]
    pub label: Vec<(String, String)>,
    /// Do not apply the default excludes (target/, node_modules/, .git/, ...).
    #[arg(long)]
    pub no_default_excludes: bool,
    /// Copy .git/ too.
    #[arg(long)]
    pub include_git: bool,
}

impl SandboxArgs {
    /// What a run of `command` on `workspace` gets from these flags: image,
    /// limits, environment, copy, labels and report. The one place flags
    /// become a run's settings; every subcommand that runs code asks here.
    pub fn run_spec(
        &self,
        workspace: impl Into<PathBuf>,
        command: impl Into<autodev::sandbox::Command>,
        profile_excludes: &[String],
    ) -> Result<RunSpec, ConfigError> {
        let mut spec = RunSpec::new(workspace, command, self.image());
        spec.limits = self.limits()?;
        spec.env = self.env.clone();
        spec.copy = self.copy_options(profile_excludes);
        spec.labels = self.label.clone();
        spec.junit = self.junit()?;
        Ok(spec)
    }

    /// The validated limits these flags describe.
    pub fn limits(&self) -> Result<Limits, ConfigError> {
        self.limits.0.validate()?;
        Ok(self.limits.0.clone())
    }

    /// Where to look for the JUnit report.
    pub fn junit(&self) -> Result<autodev::sandbox::Junit, ConfigError> {
        use autodev::sandbox::Junit;
        match self.junit.as_deref() {
            None => Ok(Junit::FromImage),
            Some("none") => Ok(Junit::Off),
            Some(p) if p.starts_with('/') && !p.contains('\0') => Ok(Junit::At(p.to_string())),
            Some(p) => Err(ConfigError::OutOfRange {
                what: "--junit",
                reason: format!("{p:?} must be an absolute path inside the sandbox, or none"),
            }),
        }
    }

    /// The image runs use.
    pub fn image(&self) -> &str {
        self.image
            .as_deref()
            .unwrap_or(autodev::profile::DEFAULT_IMAGE)
    }

    /// What to leave out of the copy: the workspace's own defaults and the
    /// profile's (unless --no-default-excludes), then --exclude.
    pub fn copy_options(&self, profile: &[String]) -> CopyOptions {
        let mut excludes: Vec<String> = if self.no_default_excludes {
            Vec::new()
        } else {
            DEFAULT_EXCLUDES
                .iter()
                .map(|s| s.to_string())
                .chain(profile.iter().cloned())
                .collect()
        };
        excludes.extend(self.exclude.iter().cloned());
        CopyOptions {
            excludes,
            include_git: self.include_git,
        }
    }
}

/// The limit flags, made from the table of limits: a new row is a new
/// flag, with its default, help and parser.
#[derive(Debug, Clone, Default)]
pub struct LimitArgs(pub Limits);

impl clap::FromArgMatches for LimitArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut args = LimitArgs::default();
        args.update_from_arg_matches(m)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        for row in LIMITS {
            if let Some(v) = m.get_one::<Value>(row.name) {
                (row.set)(&mut self.0, v.clone());
            }
        }
        Ok(())
    }
}

impl clap::Args for LimitArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        LIMITS.iter().fold(cmd, |cmd, row| {
            let what: &'static str = row.name;
            let mut arg = clap::Arg::new(row.name)
                .long(row.name.replace('_', "-"))
                .value_name(row.name.to_uppercase())
                .help(row.help)
                .allow_negative_numbers(true)
                // clap names the flag already: the message need not say it again.
                .value_parser(move |s: &str| row.unit.parse(what, s).map_err(|e| unnamed(e, what)));
            if let Some(d) = row.default {
                arg = arg.default_value(d);
            }
            if let Some(a) = row.flag_alias {
                arg = arg.visible_alias(a);
            }
            cmd.arg(arg)
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

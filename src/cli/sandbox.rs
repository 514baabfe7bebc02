//! The flags every command that runs code shares: where sandboxes run
//! (backend, engines, cluster) and their limits and isolation.

use std::path::PathBuf;

use clap::Args;

use super::parse::{duration, env_item, label_item, network, size};
use autodev::config::{self, defaults, ConfigError, Limits, Network};
use autodev::sandbox::kube::PullPolicy;
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
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u8).range(0..=16))]
    pub pool: u8,
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
    /// CPU quota in cores.
    #[arg(long, default_value = defaults::CPUS, allow_negative_numbers = true)]
    pub cpus: f64,
    /// Memory limit (no swap on top), e.g. 512m.
    #[arg(long, default_value = defaults::MEMORY, value_parser = size("--memory"))]
    pub memory: u64,
    /// Maximum number of processes and threads.
    #[arg(long, default_value = defaults::PIDS)]
    pub pids: u32,
    /// Wall-clock limit, e.g. 180s or 3m.
    #[arg(long, default_value = defaults::TIMEOUT, value_parser = duration("--timeout"))]
    pub timeout: std::time::Duration,
    /// CPU time the run may use, all processes together (e.g. 60s); the wall clock still applies.
    #[arg(long, value_parser = duration("--cpu-time"))]
    pub cpu_time: Option<std::time::Duration>,
    /// Network: none (default) or bridge.
    #[arg(long, default_value = defaults::NETWORK, value_parser = network)]
    pub network: Network,
    /// Bytes of stdout and of stderr kept (head and tail), e.g. 1MiB.
    #[arg(long, default_value = defaults::OUTPUT_LIMIT, value_parser = size("--output-limit"))]
    pub output_limit: u64,
    /// Size of the writable /workspace tmpfs.
    #[arg(long, default_value = defaults::WORKSPACE_SIZE, value_parser = size("--workspace-size"))]
    pub workspace_size: u64,
    /// Size of the writable /tmp tmpfs.
    #[arg(long, default_value = defaults::TMP_SIZE, value_parser = size("--tmp-size"))]
    pub tmp_size: u64,
    /// Refuse to copy a workspace larger than this.
    #[arg(long, default_value = defaults::MAX_COPY, value_parser = size("--max-copy"))]
    pub max_copy: u64,
    /// JUnit XML report the test command writes, a path inside the sandbox, read after it
    /// ends for per-test results; `none` to not look. Default: the image's autodev.junit label.
    #[arg(long)]
    pub junit: Option<String>,
    /// OCI runtime, e.g. runsc (gVisor) for stronger isolation; with --backend kubernetes,
    /// the pods' RuntimeClass (also --runtime-class).
    #[arg(long, visible_alias = "runtime-class")]
    pub runtime: Option<String>,
    /// User inside the container, UID:GID (never root).
    #[arg(long, default_value = defaults::USER)]
    pub user: String,
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
        let l = Limits {
            cpus: self.cpus,
            memory: self.memory,
            pids: self.pids,
            timeout: self.timeout,
            output_limit: self.output_limit,
            network: self.network,
            workspace_size: self.workspace_size,
            tmp_size: self.tmp_size,
            max_copy_bytes: self.max_copy,
            user: self.user.clone(),
            runtime: self.runtime.clone(),
            cpu_time: self.cpu_time,
        };
        l.validate()?;
        Ok(l)
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
        self.image.as_deref().unwrap_or(config::DEFAULT_IMAGE)
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

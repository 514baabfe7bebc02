//! `autodev serve`: flags of the service and of its key store.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::parse::duration;
use super::{SandboxArgs, SetupArgs};

/// `autodev serve`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    /// Manage the service's API keys instead of serving.
    #[command(subcommand)]
    pub keys: Option<ServeCommand>,
    /// Address to listen on, and port (0 picks a free one). Anything but loopback needs
    /// --https-cert, --https-key and at least one key.
    #[arg(long, default_value = "127.0.0.1:8844")]
    pub listen: String,
    /// Serve HTTPS with this certificate chain (PEM), with --https-key.
    #[arg(long, requires = "https_key", conflicts_with = "socket")]
    pub https_cert: Option<PathBuf>,
    /// The private key of --https-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "https_cert")]
    pub https_key: Option<PathBuf>,
    /// Listen on this Unix socket instead (made readable and writable by this user only).
    #[arg(long, conflicts_with = "listen")]
    pub socket: Option<PathBuf>,
    /// Also serve `autodev exec --pool-socket` clients of this user on this Unix socket (the
    /// protocol of `autodev pool`), from the same engines and containers started ahead.
    #[arg(long)]
    pub pool_socket: Option<PathBuf>,
    /// Where the service keeps its keys, usage records, sessions and batches
    /// (default: autodev's folder under $XDG_STATE_HOME).
    #[arg(long, env = "AUTODEV_SERVE_STATE")]
    pub state: Option<PathBuf>,
    /// Runs at once, over all keys.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: u16,
    /// Runs of one key that may wait for a slot; past it a request gets 429.
    #[arg(long, default_value_t = 1000)]
    pub max_queue: usize,
    /// Largest request body accepted, in bytes (files are sent inline).
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body: usize,
    /// How long a client may take to send a request body; a slower one gets 408.
    #[arg(long, default_value = "30s", value_parser = duration("--body-wait"))]
    pub body_wait: Duration,
    /// How long a finished run's events and result stay readable (1,000 runs at most).
    #[arg(long, default_value = "60s", value_parser = duration("--keep-finished"))]
    pub keep_finished: Duration,
    /// A finished or cancelled batch is removed with its results this long after its last result.
    #[arg(long, default_value = "7d", value_parser = duration("--keep-batches"))]
    pub keep_batches: Duration,
    /// Usage records (one file per UTC day in the state folder) are kept this many days.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_usage_days: u32,
    /// Sessions one key may hold at once; past it, making one is 429 until one is removed or
    /// idles out.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions: u32,
    /// A session unused for this long is removed with its files.
    #[arg(long, default_value = "1h", value_parser = duration("--session-idle"))]
    pub session_idle: Duration,
    /// Also serve MCP (the Model Context Protocol, streamable HTTP) at `/mcp`: each MCP session
    /// is a session of the caller's key, each tool call a run through the same queue and quotas.
    #[arg(long)]
    pub mcp: bool,
    /// On SIGTERM: how long runs under way get to finish before they are cancelled.
    #[arg(long, default_value = "30s", value_parser = duration("--grace"))]
    pub grace: Duration,
    /// Where runs, their limits and their image come from (the operator's floor: a request
    /// may only tighten these limits).
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// The set-up phase a request's files get (a request's `setup` replaces the install step).
    #[command(flatten)]
    pub setup: SetupArgs,
}

/// `autodev serve keys …`.
#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// API keys: add (the token is shown once), list, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `autodev serve keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a key; its token is printed once (only its SHA-256 is kept).
    Add {
        /// The key's name (letters, digits, `-`, `_`, `.`): what logs and usage show.
        name: String,
        /// Runs of this key at once (default: the service's --jobs).
        #[arg(long)]
        max_concurrent: Option<usize>,
        /// CPU-seconds this key may use in any 24 hours; past it runs get 429.
        #[arg(long)]
        cpu_seconds_per_day: Option<u64>,
        /// Highest memory limit a run of this key may have (e.g. 512m).
        #[arg(long)]
        max_memory: Option<String>,
        /// Longest wall-clock limit a run of this key may have (e.g. 60s).
        #[arg(long)]
        max_timeout: Option<String>,
        /// The service's state folder.
        #[arg(long, env = "AUTODEV_SERVE_STATE")]
        state: Option<PathBuf>,
    },
    /// List the keys (names and ceilings; tokens are not kept).
    List {
        /// The service's state folder.
        #[arg(long, env = "AUTODEV_SERVE_STATE")]
        state: Option<PathBuf>,
    },
    /// Revoke a key: a running service refuses it from its next request on.
    Revoke {
        /// The key's name.
        name: String,
        /// The service's state folder.
        #[arg(long, env = "AUTODEV_SERVE_STATE")]
        state: Option<PathBuf>,
    },
}

//! `autodev mcp`: flags of the MCP server.

use std::path::PathBuf;

use clap::Args;

use super::{SandboxArgs, SetupArgs};

/// `autodev mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// The folder every tool works on, fixed for the server's life: no tool reaches outside it.
    #[arg(long, short = 'w', default_value = ".")]
    pub workspace: PathBuf,
    /// Where runs go and their limits (a tool call may only tighten them).
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// The set-up phase `run_tests` gets (dependencies, cached by manifests).
    #[command(flatten)]
    pub setup: SetupArgs,
}

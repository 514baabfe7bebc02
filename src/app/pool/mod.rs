//! `autodev pool`: serves runs to other autodev processes of this user over
//! a Unix socket, from containers started ahead.

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::cli::PoolArgs;
pub(super) mod server;

use autodev::sandbox::{Sandbox, SandboxError};
use server::PoolSocket;

pub(super) async fn pool_cmd(args: PoolArgs, cancel: &CancellationToken) -> Result<()> {
    // What the containers started ahead are made for (nothing of a run,
    // workspace, command or environment, is in a container's definition).
    let spec = args.sandbox.run_spec("/", "true", &[])?;
    let warm = server::settings(&spec.image, &spec.limits, &spec.labels);
    // A bad path is said before any engine is asked; on a later error the
    // socket goes with it.
    let socket = PoolSocket::bind(&args.socket)?;
    let sandbox = super::connect(&args.sandbox.engines).await?;
    // Refused settings or a missing image are said now, not to each client.
    sandbox.check_limits(&warm).await?;
    sandbox.preflight(&warm).await?;
    sandbox.warm(&warm);
    autodev::errln!(
        "autodev pool: serving runs on {}, {} container(s) of {} started ahead; Ctrl-C or SIGTERM stops it and removes them",
        args.socket.display(),
        args.sandbox.engines.warm,
        warm.image
    );
    server::serve(sandbox, socket, &warm, cancel).await;
    Err(SandboxError::Interrupted.into())
}

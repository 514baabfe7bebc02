//! `autodev mcp`: a Model Context Protocol server on stdin/stdout
//! (newline-delimited JSON-RPC 2.0, the protocol's stdio transport) for
//! coding agents. One folder, fixed at start, is the workspace; the tools
//! (`tools.rs`) run commands in fresh containers through the same engine
//! as `exec` and touch files through the patch applier's rules. Stdout
//! carries the protocol only: everything else goes to stderr.

pub(crate) mod protocol;
pub(crate) mod tools;

use std::process::ExitCode;

use anyhow::Result;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::UsageError;
use crate::cli::McpArgs;
use autodev::profile::Profile;
use autodev::sandbox::Sandbox;
use tools::Tools;

/// Longest request line read: a write_file of a large file fits; more is refused.
const MAX_LINE: usize = 32 << 20;

pub(super) async fn mcp_cmd(
    args: McpArgs,
    profile: &Profile,
    cancel: &CancellationToken,
) -> Result<ExitCode> {
    let root = args
        .workspace
        .canonicalize()
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| {
            UsageError(format!(
                "--workspace {}: not a folder",
                args.workspace.display()
            ))
        })?;
    let spec = args
        .sandbox
        .run_spec(&root, profile.runner.as_str(), &profile.exclude)?;
    let setup = autodev::env::Setup {
        profile: profile.name.clone(),
        settings: args.setup.settings().map_err(UsageError)?,
    };
    let sandbox = super::connect(&args.sandbox.engines).await?;
    sandbox.check_limits(&spec).await?;
    sandbox.warm(&spec);
    autodev::errln!(
        "autodev mcp: serving {} on stdin/stdout; every tool call runs in a fresh container",
        root.display()
    );
    let tools = Tools::new(sandbox.clone(), spec.clone(), setup, profile.runner.clone());
    let mut input = BufReader::new(tokio::io::stdin());
    let mut out = tokio::io::stdout();
    loop {
        let line = tokio::select! {
            l = read_line(&mut input) => l,
            () = cancel.cancelled() => break,
        };
        let answer = match line {
            // The client closed stdin, or it broke: the session is over.
            Line::End => break,
            Line::TooLong => Some(protocol::error(
                Value::Null,
                -32600,
                &format!("request over {MAX_LINE} bytes"),
            )),
            Line::Text(l) if l.trim().is_empty() => continue,
            Line::Text(l) => match serde_json::from_str(&l) {
                Ok(msg) => protocol::handle(&tools, msg, cancel).await,
                Err(e) => Some(protocol::error(
                    Value::Null,
                    -32700,
                    &format!("parse error: {e}"),
                )),
            },
        };
        if let Some(a) = answer {
            let mut text = a.to_string();
            text.push('\n');
            if out.write_all(text.as_bytes()).await.is_err() || out.flush().await.is_err() {
                break;
            }
        }
    }
    sandbox.retire(&spec).await;
    Ok(ExitCode::SUCCESS)
}

/// One message line from the client.
enum Line {
    Text(String),
    /// Over [`MAX_LINE`]: read to its end and dropped, never held whole.
    TooLong,
    End,
}

/// Reads one line, holding at most [`MAX_LINE`] bytes of it.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(input: &mut R) -> Line {
    let mut buf = Vec::new();
    match (&mut *input)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await
    {
        Ok(0) | Err(_) => return Line::End,
        Ok(_) => {}
    }
    if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
        // The rest of the line, in bounded pieces.
        loop {
            let chunk = match input.fill_buf().await {
                Ok([]) | Err(_) => return Line::End,
                Ok(c) => c,
            };
            let (n, end) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            input.consume(n);
            if end {
                return Line::TooLong;
            }
        }
    }
    Line::Text(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_line_over_the_cap_is_dropped_without_being_held_and_the_next_one_reads() {
        let mut data = vec![b'x'; MAX_LINE + 10];
        data.extend_from_slice(b"\n{\"a\":1}\n");
        let mut r = BufReader::with_capacity(4096, &data[..]);
        assert!(matches!(read_line(&mut r).await, Line::TooLong));
        assert!(matches!(read_line(&mut r).await, Line::Text(t) if t == "{\"a\":1}\n"));
        assert!(matches!(read_line(&mut r).await, Line::End));
    }
}

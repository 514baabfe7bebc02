//! The protocol part of the MCP server, the same over stdio (`autodev
//! mcp`) and streamable HTTP (`autodev serve --mcp`): JSON-RPC 2.0 requests
//! in, answers out, tool calls carried out by a [`ToolHost`].

use std::future::Future;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::tools::{Answer, CallError};

/// The protocol version answered when the client names none this server knows.
pub(crate) const PROTOCOL: &str = "2025-06-18";
/// Versions this server speaks (the tools part has not changed between them).
const KNOWN: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18"];

/// What carries out the tools: a workspace folder of this host (stdio), or
/// a session of the service (HTTP).
pub(crate) trait ToolHost: Sync {
    /// The tools' definitions (`tools/list`).
    fn tools(&self) -> Value;
    /// Carries out one tool call: its text, its structured answer, and
    /// whether it failed.
    fn call(
        &self,
        name: &str,
        args: &Value,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<Answer, CallError>> + Send;
}

pub(crate) fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn reply(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// One message: the answer to a request, nothing for a notification.
pub(crate) async fn handle<H: ToolHost>(
    tools: &H,
    msg: Value,
    cancel: &CancellationToken,
) -> Option<Value> {
    let id = msg.get("id").cloned()?;
    let method = msg["method"].as_str().unwrap_or_default();
    let params = &msg["params"];
    Some(match method {
        "initialize" => {
            let asked = params["protocolVersion"].as_str().unwrap_or(PROTOCOL);
            let version = if KNOWN.contains(&asked) {
                asked
            } else {
                PROTOCOL
            };
            reply(
                id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "autodev", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": super::tools::INSTRUCTIONS,
                }),
            )
        }
        "ping" => reply(id, json!({})),
        "tools/list" => reply(id, json!({"tools": tools.tools()})),
        "tools/call" => {
            let name = params["name"].as_str().unwrap_or_default();
            let empty = json!({});
            let arguments = params.get("arguments").unwrap_or(&empty);
            match tools.call(name, arguments, cancel).await {
                Ok((text, structured, failed)) => reply(
                    id,
                    json!({
                        "content": [{"type": "text", "text": text}],
                        "structuredContent": structured,
                        "isError": failed,
                    }),
                ),
                Err(CallError::Unknown) => error(id, -32602, &format!("unknown tool {name:?}")),
                // A bad argument is the tool's answer, which the model reads.
                Err(CallError::Refused(why)) => reply(
                    id,
                    json!({"content": [{"type": "text", "text": why}], "isError": true}),
                ),
            }
        }
        other => error(id, -32601, &format!("method not found: {other}")),
    })
}

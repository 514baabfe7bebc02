//! Ollama's HTTP API (`POST {host}/api/chat`, not streamed).

use serde_json::json;

use super::http::{self, RetryPolicy};
use super::{Completion, Message, ModelClient, ModelError, Usage, TEMPERATURE};

/// Where Ollama listens unless `OLLAMA_HOST` says otherwise.
pub const DEFAULT_HOST: &str = "http://127.0.0.1:11434";
/// Model used when neither `--model` nor `OLLAMA_MODEL` is set.
pub const DEFAULT_MODEL: &str = "llama3.1";

/// An Ollama server.
#[derive(Debug)]
pub struct Ollama {
    client: reqwest::Client,
    url: String,
    model: String,
    policy: RetryPolicy,
}

impl Ollama {
    /// A client for `model` on the server at `host` (`http://` added if missing).
    pub fn new(host: &str, model: &str, policy: RetryPolicy) -> Result<Self, ModelError> {
        let host = host.trim_end_matches('/');
        let base = if host.contains("://") {
            host.to_string()
        } else {
            format!("http://{host}")
        };
        Ok(Ollama {
            client: http::client(&policy)?,
            url: format!("{base}/api/chat"),
            model: model.to_string(),
            policy,
        })
    }
}

impl Ollama {
    /// The chat endpoint requests go to.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl ModelClient for Ollama {
    fn describe(&self) -> String {
        format!("ollama:{}", self.model)
    }

    async fn complete(&self, messages: &[Message]) -> Result<Completion, ModelError> {
        let body = json!({
            "model": self.model,
            "messages": messages,
            "stream": false,
            "options": { "temperature": TEMPERATURE },
        });
        let (v, attempts) = http::send(
            &self.client,
            &self.url,
            None,
            &body,
            &self.model,
            &self.policy,
        )
        .await?;
        let text = http::text_at(&v, "/message/content", &self.url)?;
        let prompt = v.get("prompt_eval_count").and_then(|x| x.as_u64());
        let completion = v.get("eval_count").and_then(|x| x.as_u64());
        let usage = (prompt.is_some() || completion.is_some()).then(|| Usage {
            prompt_tokens: prompt.unwrap_or(0),
            completion_tokens: completion.unwrap_or(0),
        });
        Ok(Completion {
            text,
            usage,
            attempts,
        })
    }
}

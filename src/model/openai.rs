//! OpenAI-compatible chat completions (`POST {base}/chat/completions`).

use serde_json::json;

use super::http::{self, RetryPolicy};
use super::{Completion, Message, ModelClient, ModelError, Usage, TEMPERATURE};

/// Default base URL; `--base-url` / `OPENAI_BASE_URL` point elsewhere (vLLM, llama.cpp, LM Studio).
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// An OpenAI-compatible endpoint.
#[derive(Debug)]
pub struct OpenAi {
    client: reqwest::Client,
    url: String,
    key: Option<String>,
    model: String,
    policy: RetryPolicy,
}

impl OpenAi {
    /// A client for `model` at `base_url`; `key` is sent as a bearer token.
    pub fn new(
        base_url: &str,
        key: Option<String>,
        model: &str,
        policy: RetryPolicy,
    ) -> Result<Self, ModelError> {
        Ok(OpenAi {
            client: http::client(&policy)?,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            key,
            model: model.to_string(),
            policy,
        })
    }
}

impl ModelClient for OpenAi {
    fn describe(&self) -> String {
        format!("openai:{}", self.model)
    }

    async fn complete(&self, messages: &[Message]) -> Result<Completion, ModelError> {
        let body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": TEMPERATURE,
        });
        let (v, attempts) = http::send(
            &self.client,
            &self.url,
            self.key.as_deref(),
            &body,
            &self.model,
            &self.policy,
        )
        .await?;
        let text = http::text_at(&v, "/choices/0/message/content", &self.url)?;
        let usage = v.get("usage").map(|u| Usage {
            prompt_tokens: u.get("prompt_tokens").and_then(|x| x.as_u64()).unwrap_or(0),
            completion_tokens: u
                .get("completion_tokens")
                .and_then(|x| x.as_u64())
                .unwrap_or(0),
        });
        Ok(Completion {
            text,
            usage,
            attempts,
        })
    }
}

//! Model clients: one trait, three providers.
//!
//! - [`openai::OpenAi`]: OpenAI-compatible chat completions (OpenAI, vLLM,
//!   llama.cpp's server, LM Studio) at a configurable base URL.
//! - [`ollama::Ollama`]: Ollama's HTTP API.
//! - [`replay::Replay`]: scripted replies from a file, for demos and tests.
//!
//! HTTP providers share [`http::send`], which retries 429, 5xx, timeouts and
//! connection errors with exponential backoff and jitter (honouring
//! `Retry-After`) and never retries 400/401/403/404.

pub mod http;
pub mod ollama;
pub mod openai;
pub mod replay;

use std::future::Future;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use http::{RetryPolicy, DEFAULT_MAX_REPLY_BYTES};

/// Sampling temperature of the original tool: near-deterministic edits.
pub const TEMPERATURE: f64 = 0.1;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: "system".into(),
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }
}

/// Token counts, when the server reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens in the reply.
    pub completion_tokens: u64,
}

impl Usage {
    /// Sum of both.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
    }
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The reply text.
    pub text: String,
    /// Token usage, if reported.
    pub usage: Option<Usage>,
    /// How many HTTP attempts it took (1 = no retry).
    pub attempts: u32,
}

/// Why no answer could be had from the model.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// No API key for OpenAI.
    #[error("OPENAI_API_KEY is not set: export it, or use USE_OLLAMA=1 for Ollama, or --replay FILE to run offline")]
    MissingKey,
    /// 401/403: the key was refused.
    #[error("the model API at {url} refused the credentials (HTTP {status}): check OPENAI_API_KEY; server said: {detail}")]
    Auth {
        /// Endpoint.
        url: String,
        /// 401 or 403.
        status: u16,
        /// Server message.
        detail: String,
    },
    /// 404: unknown model or wrong endpoint.
    #[error("the model API at {url} answered 404: unknown model {model:?} or wrong base URL; server said: {detail}")]
    NotFound {
        /// Endpoint.
        url: String,
        /// Model asked for.
        model: String,
        /// Server message.
        detail: String,
    },
    /// Another 4xx: the request itself is wrong.
    #[error("the model API at {url} rejected the request (HTTP {status}): {detail}")]
    Rejected {
        /// Endpoint.
        url: String,
        /// Status.
        status: u16,
        /// Server message.
        detail: String,
    },
    /// Transient failures went on past the retry budget.
    #[error("the model API at {url} still failed after {attempts} attempts; last: {last}")]
    Exhausted {
        /// Endpoint.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Last failure.
        last: String,
    },
    /// The body was not the expected JSON.
    #[error(
        "the model API at {url} sent an unreadable reply ({detail}); body starts: {snippet:?}"
    )]
    Malformed {
        /// Endpoint.
        url: String,
        /// Parse error.
        detail: String,
        /// Start of the body.
        snippet: String,
    },
    /// The reply was over the size cap.
    #[error("the model API at {url} sent a reply over {limit} bytes: raise --max-reply-size if that is expected")]
    TooLarge {
        /// Endpoint.
        url: String,
        /// The cap.
        limit: u64,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// The replay file could not be read.
    #[error("cannot read replay file {path}: {source}")]
    ReplayFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The replay file holds no reply.
    #[error("replay file {0} holds no reply: write one reply, or several separated by `=== REPLY ===` lines")]
    ReplayEmpty(PathBuf),
    /// The replay file ran out of replies.
    #[error("replay file {path} has no reply left (it holds {available}); add replies separated by `=== REPLY ===` lines")]
    ReplayExhausted {
        /// The file.
        path: PathBuf,
        /// How many it holds.
        available: usize,
    },
    /// The model settings are contradictory or unusable.
    #[error("model settings: {0}")]
    Settings(String),
    /// Interrupted by the user.
    #[error("interrupted while waiting for the model")]
    Interrupted,
}

/// Which kind of server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions.
    Openai,
    /// Ollama's HTTP API.
    Ollama,
    /// Scripted replies.
    Replay,
}

/// What a run asks of its model, from flags or a batch task; the environment
/// fills the rest (`USE_OLLAMA`, `OLLAMA_HOST`, `OLLAMA_MODEL`,
/// `OPENAI_API_KEY`, `OPENAI_BASE_URL`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Provider; by default replay when replies are given, Ollama when
    /// `USE_OLLAMA=1`, else OpenAI.
    pub provider: Option<ProviderKind>,
    /// Model name.
    pub name: Option<String>,
    /// Base URL of an OpenAI-compatible API.
    pub base_url: Option<String>,
    /// Replay file.
    pub replay: Option<PathBuf>,
    /// Inline replay replies.
    pub replies: Option<Vec<String>>,
    /// Retries and timeouts.
    #[serde(skip)]
    pub policy: RetryPolicy,
}

/// OpenAI model used when none is named.
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";

impl ModelSettings {
    /// The provider these settings select.
    pub fn provider(&self) -> ProviderKind {
        self.provider
            .unwrap_or(if self.replay.is_some() || self.replies.is_some() {
                ProviderKind::Replay
            } else if std::env::var("USE_OLLAMA").is_ok_and(|v| truthy(&v)) {
                ProviderKind::Ollama
            } else {
                ProviderKind::Openai
            })
    }

    /// Checks that the settings make sense together: a replay file goes
    /// with the replay provider only, a base URL with an HTTP one, and a
    /// request needs time to happen.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Settings(m));
        let provider = self.provider();
        if provider != ProviderKind::Replay && (self.replay.is_some() || self.replies.is_some()) {
            return bad(format!(
                "a replay file or replies were given with provider {}: drop them, or use the replay provider",
                provider.as_str()
            ));
        }
        if provider == ProviderKind::Replay && self.base_url.is_some() {
            return bad(
                "a base URL was given with the replay provider, which makes no request".into(),
            );
        }
        if let Some(url) = &self.base_url {
            check_url(url)?;
        }
        if self.policy.request_timeout.is_zero() {
            return bad("--model-timeout must be more than 0s".into());
        }
        if self.policy.max_reply_bytes == 0 {
            return bad("--max-reply-size must be more than 0".into());
        }
        Ok(())
    }

    /// Builds the client (after [`ModelSettings::validate`]).
    pub fn build(&self) -> Result<AnyModel, ModelError> {
        self.validate()?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Ok(match self.provider() {
            ProviderKind::Replay => {
                match (&self.replies, &self.replay) {
                    (Some(replies), _) => {
                        let text: String = replies
                            .iter()
                            .map(|r| format!("{}\n{r}\n", replay::SEPARATOR))
                            .collect();
                        AnyModel::Replay(replay::Replay::from_text(
                            std::path::Path::new("inline replies"),
                            &text,
                        ))
                    }
                    (None, Some(path)) => AnyModel::Replay(replay::Replay::load(path)?),
                    (None, None) => return Err(ModelError::Settings(
                        "the replay provider needs a replay file (--replay FILE) or inline replies"
                            .into(),
                    )),
                }
            }
            ProviderKind::Ollama => {
                let host = self
                    .base_url
                    .clone()
                    .or_else(|| env("OLLAMA_HOST"))
                    .unwrap_or_else(|| ollama::DEFAULT_HOST.into());
                let name = self
                    .name
                    .clone()
                    .or_else(|| env("OLLAMA_MODEL"))
                    .unwrap_or_else(|| ollama::DEFAULT_MODEL.into());
                AnyModel::Ollama(ollama::Ollama::new(&host, &name, self.policy)?)
            }
            ProviderKind::Openai => {
                let key = env("OPENAI_API_KEY");
                let base = self.base_url.clone().or_else(|| env("OPENAI_BASE_URL"));
                // A self-hosted server (vLLM, llama.cpp) may need no key; OpenAI does.
                if key.is_none() && base.is_none() {
                    return Err(ModelError::MissingKey);
                }
                let base = base.unwrap_or_else(|| openai::DEFAULT_BASE_URL.into());
                let name = self
                    .name
                    .clone()
                    .unwrap_or_else(|| DEFAULT_OPENAI_MODEL.into());
                AnyModel::OpenAi(openai::OpenAi::new(&base, key, &name, self.policy)?)
            }
        })
    }
}

impl crate::error::Classify for ModelError {
    fn class(&self) -> crate::error::ErrorClass {
        if self.is_usage() {
            crate::error::ErrorClass::Usage
        } else {
            crate::error::ErrorClass::Model
        }
    }
}

impl ModelError {
    /// Whether the error is in what the user gave (settings, replay file),
    /// found before any request: a usage error, not a failure of the model.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ModelError::Settings(_) | ModelError::ReplayFile { .. } | ModelError::ReplayEmpty(_)
        )
    }
}

impl ProviderKind {
    /// The provider's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Replay => "replay",
        }
    }
}

/// `1`, `true`, `yes` or `on`, in any case: how people write "set" in the environment.
pub fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// A base URL must be an absolute http(s) URL; anything else would only be
/// found out after the retries.
fn check_url(url: &str) -> Result<(), ModelError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(ModelError::Settings(format!(
            "base URL {url:?} is not an http:// or https:// URL"
        ))),
    }
}

/// Something that answers chat prompts.
pub trait ModelClient: Send + Sync {
    /// `provider:model`, for the transcript.
    fn describe(&self) -> String;
    /// Sends the messages, returns the reply.
    fn complete(
        &self,
        messages: &[Message],
    ) -> impl Future<Output = Result<Completion, ModelError>> + Send;
}

/// The configured provider, chosen at start-up.
#[derive(Debug)]
pub enum AnyModel {
    /// OpenAI-compatible.
    OpenAi(openai::OpenAi),
    /// Ollama.
    Ollama(ollama::Ollama),
    /// Scripted.
    Replay(replay::Replay),
}

impl ModelClient for AnyModel {
    fn describe(&self) -> String {
        match self {
            AnyModel::OpenAi(m) => m.describe(),
            AnyModel::Ollama(m) => m.describe(),
            AnyModel::Replay(m) => m.describe(),
        }
    }
    async fn complete(&self, messages: &[Message]) -> Result<Completion, ModelError> {
        match self {
            AnyModel::OpenAi(m) => m.complete(messages).await,
            AnyModel::Ollama(m) => m.complete(messages).await,
            AnyModel::Replay(m) => m.complete(messages).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(provider: Option<ProviderKind>) -> ModelSettings {
        ModelSettings {
            provider,
            ..ModelSettings::default()
        }
    }

    #[test]
    fn contradictory_settings_are_refused() {
        let with_replay = ModelSettings {
            replay: Some("r.txt".into()),
            ..settings(Some(ProviderKind::Openai))
        };
        assert!(matches!(
            with_replay.validate(),
            Err(ModelError::Settings(_))
        ));
        let bad_url = ModelSettings {
            base_url: Some("notaurl".into()),
            ..settings(Some(ProviderKind::Openai))
        };
        assert!(bad_url
            .validate()
            .unwrap_err()
            .to_string()
            .contains("notaurl"));
        let mut zero = settings(Some(ProviderKind::Ollama));
        zero.policy.request_timeout = std::time::Duration::ZERO;
        assert!(zero.validate().is_err());
        let ok = ModelSettings {
            base_url: Some("http://127.0.0.1:9/v1".into()),
            ..settings(Some(ProviderKind::Ollama))
        };
        ok.validate().unwrap();
    }

    #[test]
    fn ollama_uses_the_given_base_url() {
        let m = ModelSettings {
            base_url: Some("http://127.0.0.1:18182".into()),
            name: Some("m".into()),
            ..settings(Some(ProviderKind::Ollama))
        };
        let AnyModel::Ollama(o) = m.build().unwrap() else {
            panic!("not ollama")
        };
        assert_eq!(o.url(), "http://127.0.0.1:18182/api/chat");
    }

    #[test]
    fn truthy_values() {
        for v in ["1", "true", "TRUE", "yes", "on"] {
            assert!(truthy(v), "{v}");
        }
        for v in ["0", "false", "", "no"] {
            assert!(!truthy(v), "{v}");
        }
    }
}

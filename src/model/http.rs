//! The HTTP exchange shared by the providers: one POST of JSON, retried on
//! what is worth retrying, classified on what is not.

use std::time::Duration;

use reqwest::StatusCode;

use super::ModelError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base_delay: Duration,
    /// Upper bound of one delay, `Retry-After` included.
    pub max_delay: Duration,
    /// Limit of one request, body included.
    pub request_timeout: Duration,
    /// Largest reply body read; a bigger one is refused, not buffered.
    pub max_reply_bytes: u64,
}

/// Default of [`RetryPolicy::max_reply_bytes`]: far above any real reply of
/// whole files, far below what would strain the host.
pub const DEFAULT_MAX_REPLY_BYTES: u64 = 8 * 1024 * 1024;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `n` (from 1): exponential with full jitter
    /// in its upper half, so many clients do not retry in step.
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << n.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        capped.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// Builds the client every provider uses: rustls, no proxy surprises.
pub fn client(policy: &RetryPolicy) -> Result<reqwest::Client, ModelError> {
    reqwest::Client::builder()
        .timeout(policy.request_timeout)
        .connect_timeout(policy.request_timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| ModelError::Client(e.to_string()))
}

/// POSTs `body` to `url` and returns the parsed JSON reply and the number of
/// attempts it took.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
    model: &str,
    policy: &RetryPolicy,
) -> Result<(serde_json::Value, u32), ModelError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = client.post(url).json(body);
        if let Some(key) = bearer {
            req = req.bearer_auth(key);
        }
        let (last, retry_after) = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = retry_after(resp.headers());
                match read_capped(resp, policy.max_reply_bytes).await {
                    Ok(Body::TooLarge) => {
                        return Err(ModelError::TooLarge {
                            url: url.to_string(),
                            limit: policy.max_reply_bytes,
                        })
                    }
                    Ok(Body::Whole(bytes)) if status.is_success() => {
                        return parse(url, &bytes).map(|v| (v, attempt))
                    }
                    Ok(Body::Whole(bytes)) => {
                        let detail = error_detail(&bytes);
                        match classify(status) {
                            Class::Retry => (format!("HTTP {status}: {detail}"), retry_after),
                            Class::Fatal => return Err(fatal(url, model, status, detail)),
                        }
                    }
                    Err(e) => (describe(&e), None),
                }
            }
            Err(e) => (describe(&e), None),
        };
        if attempt >= policy.max_attempts {
            return Err(ModelError::Exhausted {
                url: url.to_string(),
                attempts: attempt,
                last,
            });
        }
        let delay =
            retry_after.map_or_else(|| policy.backoff(attempt), |d| d.min(policy.max_delay));
        tokio::time::sleep(delay).await;
    }
}

enum Body {
    Whole(Vec<u8>),
    TooLarge,
}

/// Reads the body chunk by chunk, stopping as soon as it passes `limit`.
async fn read_capped(mut resp: reqwest::Response, limit: u64) -> Result<Body, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Ok(Body::TooLarge);
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Ok(Body::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Body::Whole(buf))
}

enum Class {
    Retry,
    Fatal,
}

fn classify(status: StatusCode) -> Class {
    // 408 and 429 are the server asking us to come back; 5xx may pass.
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Class::Retry
    } else {
        Class::Fatal
    }
}

fn fatal(url: &str, model: &str, status: StatusCode, detail: String) -> ModelError {
    let url = url.to_string();
    match status.as_u16() {
        401 | 403 => ModelError::Auth {
            url,
            status: status.as_u16(),
            detail,
        },
        404 => ModelError::NotFound {
            url,
            model: model.to_string(),
            detail,
        },
        s => ModelError::Rejected {
            url,
            status: s,
            detail,
        },
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("timed out: {e}")
    } else if e.is_connect() {
        format!("connection failed: {e}")
    } else {
        e.to_string()
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(secs) = v.trim().parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = humantime::parse_rfc3339_weak(v)
        .ok()
        .or_else(|| httpdate(v))?;
    when.duration_since(std::time::SystemTime::now()).ok()
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers send.
fn httpdate(v: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 {
        return None;
    }
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == parts[2])? + 1;
    let text = format!(
        "{}-{:02}-{:02}T{}Z",
        parts[3],
        month,
        parts[1].parse::<u32>().ok()?,
        parts[4]
    );
    humantime::parse_rfc3339(&text).ok()
}

fn parse(url: &str, bytes: &[u8]) -> Result<serde_json::Value, ModelError> {
    serde_json::from_slice(bytes).map_err(|e| ModelError::Malformed {
        url: url.to_string(),
        detail: e.to_string(),
        snippet: snippet(bytes),
    })
}

fn snippet(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
}

/// The server's own words: `error.message`, `error`, or the body's start.
fn error_detail(bytes: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if let Some(m) = v.pointer("/error/message").and_then(|m| m.as_str()) {
            return m.to_string();
        }
        if let Some(m) = v.get("error").and_then(|m| m.as_str()) {
            return m.to_string();
        }
    }
    snippet(bytes)
}

/// Reads a string at a JSON pointer or reports the reply as malformed.
pub fn text_at(v: &serde_json::Value, pointer: &str, url: &str) -> Result<String, ModelError> {
    v.pointer(pointer)
        .and_then(|c| c.as_str())
        .map(str::to_string)
        .ok_or_else(|| ModelError::Malformed {
            url: url.to_string(),
            detail: format!("no text at {pointer}"),
            snippet: v.to_string().chars().take(200).collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        let d1 = p.backoff(1);
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
        let d3 = p.backoff(3);
        assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
        assert!(p.backoff(30) <= Duration::from_millis(1000));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None, "a past date means no wait");
        assert!(httpdate("Sun, 06 Nov 1994 08:49:37 GMT").is_some());
    }

    #[test]
    fn error_detail_prefers_the_servers_message() {
        assert_eq!(
            error_detail(br#"{"error":{"message":"bad key"}}"#),
            "bad key"
        );
        assert_eq!(
            error_detail(br#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(error_detail(b"<html>"), "<html>");
    }
}

//! Model clients against loopback HTTP servers (wiremock).

use std::time::{Duration, Instant};

use autodev::model::ollama::Ollama;
use autodev::model::openai::OpenAi;
use autodev::model::{Message, ModelClient, ModelError, RetryPolicy, Usage};
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
        request_timeout: Duration::from_secs(2),
        max_reply_bytes: 1 << 20,
    }
}

#[tokio::test]
async fn a_reply_over_the_size_cap_is_refused_not_buffered_or_retried() {
    let server = MockServer::start().await;
    let big = "x".repeat(2 << 20);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body(&big)))
        .expect(1)
        .mount(&server)
        .await;
    let m = OpenAi::new(&server.uri(), Some("k".into()), "m", fast()).unwrap();
    let e = m.complete(&msgs()).await.unwrap_err();
    assert!(
        matches!(e, ModelError::TooLarge { limit, .. } if limit == 1 << 20),
        "{e}"
    );
    assert!(e.to_string().contains("--max-reply-size"), "{e}");
}

fn msgs() -> Vec<Message> {
    vec![Message::system("rules"), Message::user("task")]
}

fn ok_body(text: &str) -> serde_json::Value {
    json!({"choices":[{"message":{"role":"assistant","content":text}}],
           "usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}})
}

#[tokio::test]
async fn openai_success_sends_model_key_temperature_and_reads_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test"))
        .and(body_partial_json(json!({"model":"m1","temperature":0.1,
            "messages":[{"role":"system","content":"rules"},{"role":"user","content":"task"}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("PATCH::a\nx\nENDPATCH")))
        .expect(1)
        .mount(&server)
        .await;
    let c = OpenAi::new(
        &format!("{}/v1/", server.uri()),
        Some("sk-test".into()),
        "m1",
        fast(),
    )
    .unwrap();
    let r = c.complete(&msgs()).await.unwrap();
    assert_eq!(r.text, "PATCH::a\nx\nENDPATCH");
    assert_eq!(
        r.usage,
        Some(Usage {
            prompt_tokens: 12,
            completion_tokens: 5
        })
    );
    assert_eq!(r.attempts, 1);
}

#[tokio::test]
async fn openai_429_with_retry_after_then_success() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("ok")))
        .mount(&server)
        .await;
    let c = OpenAi::new(&server.uri(), Some("k".into()), "m", fast()).unwrap();
    let t = Instant::now();
    let r = c.complete(&msgs()).await.unwrap();
    assert_eq!(r.text, "ok");
    assert_eq!(r.attempts, 2);
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "Retry-After ignored: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn openai_5xx_exhausts_the_budget() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("overloaded"))
        .expect(3)
        .mount(&server)
        .await;
    let c = OpenAi::new(&server.uri(), Some("k".into()), "m", fast()).unwrap();
    let err = c.complete(&msgs()).await.unwrap_err();
    match &err {
        ModelError::Exhausted { attempts, last, .. } => {
            assert_eq!(*attempts, 3);
            assert!(
                last.contains("503") && last.contains("overloaded"),
                "{last}"
            );
        }
        other => panic!("expected Exhausted, got {other}"),
    }
}

#[tokio::test]
async fn openai_401_is_not_retried_and_names_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error":{"message":"Incorrect API key provided"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = OpenAi::new(&server.uri(), Some("bad".into()), "m", fast()).unwrap();
    let err = c.complete(&msgs()).await.unwrap_err();
    assert!(matches!(err, ModelError::Auth { status: 401, .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("OPENAI_API_KEY") && text.contains("Incorrect API key"),
        "{text}"
    );
}

#[tokio::test]
async fn openai_404_names_the_model() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error":{"message":"model gpt-9 does not exist"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = OpenAi::new(&server.uri(), Some("k".into()), "gpt-9", fast()).unwrap();
    let err = c.complete(&msgs()).await.unwrap_err();
    assert!(matches!(err, ModelError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("\"gpt-9\""));
}

#[tokio::test]
async fn openai_malformed_json_is_reported_clearly() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"choices\": [ trunc"))
        .mount(&server)
        .await;
    let c = OpenAi::new(&server.uri(), Some("k".into()), "m", fast()).unwrap();
    let err = c.complete(&msgs()).await.unwrap_err();
    assert!(matches!(err, ModelError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("trunc"));

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"choices":[]})))
        .mount(&server)
        .await;
    let c = OpenAi::new(&server.uri(), Some("k".into()), "m", fast()).unwrap();
    let err = c.complete(&msgs()).await.unwrap_err();
    assert!(
        err.to_string().contains("/choices/0/message/content"),
        "{err}"
    );
}

#[tokio::test]
async fn openai_slow_server_times_out_within_the_budget() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(ok_body("late"))
                .set_delay(Duration::from_secs(10)),
        )
        .mount(&server)
        .await;
    let policy = RetryPolicy {
        max_attempts: 2,
        request_timeout: Duration::from_millis(300),
        ..fast()
    };
    let c = OpenAi::new(&server.uri(), Some("k".into()), "m", policy).unwrap();
    let t = Instant::now();
    let err = c.complete(&msgs()).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        matches!(&err, ModelError::Exhausted { attempts: 2, last, .. } if last.contains("timed out")),
        "{err}"
    );
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported() {
    // Bind then drop a listener: the port is loopback and closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = OpenAi::new(
        &format!("http://127.0.0.1:{port}"),
        Some("k".into()),
        "m",
        fast(),
    )
    .unwrap();
    let err = c.complete(&msgs()).await.unwrap_err();
    assert!(
        matches!(&err, ModelError::Exhausted { attempts: 3, last, .. } if last.contains("connection")),
        "{err}"
    );
}

#[tokio::test]
async fn ollama_success_and_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .and(body_partial_json(
            json!({"model":"llama3.1","stream":false,"options":{"temperature":0.1}}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model":"llama3.1","message":{"role":"assistant","content":"hi"},
            "done":true,"prompt_eval_count":7,"eval_count":3})))
        .expect(1)
        .mount(&server)
        .await;
    let c = Ollama::new(&server.uri(), "llama3.1", fast()).unwrap();
    let r = c.complete(&msgs()).await.unwrap();
    assert_eq!(r.text, "hi");
    assert_eq!(r.usage.unwrap().total(), 10);
}

#[tokio::test]
async fn ollama_unknown_model_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error":"model \"nope\" not found, try pulling it first"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let host = server.uri().trim_start_matches("http://").to_string();
    let c = Ollama::new(&host, "nope", fast()).unwrap();
    let err = c.complete(&msgs()).await.unwrap_err();
    assert!(matches!(err, ModelError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("try pulling it first"));
}

#[tokio::test]
async fn a_429_storm_is_reported_after_the_budget_with_the_last_status() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_json(json!({"error":{"message":"Rate limit reached"}})),
        )
        .expect(3)
        .mount(&server)
        .await;
    let c = OpenAi::new(&server.uri(), Some("k".into()), "m", fast()).unwrap();
    let err = c.complete(&msgs()).await.unwrap_err();
    assert!(
        matches!(&err, ModelError::Exhausted { attempts: 3, last, .. } if last.contains("429") && last.contains("Rate limit")),
        "{err}"
    );
}

//! Environments for a cluster: built on this host's engine, pushed to the
//! registry the nodes pull from (`--registry`), and named by digest.
//!
//! The engine pushes (with the credentials `docker login` filed for that
//! registry, and the certificates the engine trusts for it), so a registry
//! that works for `docker push` here works for autodev. The pod names the
//! image `REGISTRY/autodev-env/PROFILE@sha256:…`: a tag someone overwrote in
//! the meantime cannot change what the tests run in.

use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{EnvError, EnvRecord};
use crate::sandbox::docker::DockerSandbox;
use crate::sandbox::kube::Registry;
use crate::sandbox::SandboxError;

/// Pushes `record`'s image to `registry` from `docker` and returns the
/// reference the nodes pull (`REPOSITORY@sha256:…`). A push whose layers the
/// registry already holds sends only their digests.
pub(super) async fn publish(
    docker: &DockerSandbox,
    record: &EnvRecord,
    registry: &Registry,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<String, EnvError> {
    let (name, tag) = record
        .image
        .rsplit_once(':')
        .unwrap_or((record.image.as_str(), "latest"));
    let repository = registry.repository(name);
    let fail = |message: String| EnvError::Publish {
        registry: registry.to_string(),
        message,
    };
    // The push's tag is shared by every run of this environment on this
    // engine (16 batch tasks, say): one at a time tags, pushes and untags.
    let _lock = super::cache::lock(&record.key, limit + Duration::from_secs(60), cancel).await?;
    let client = docker.client();
    client
        .tag_image(
            &record.image_id,
            Some(TagImageOptions {
                repo: Some(repository.clone()),
                tag: Some(tag.to_string()),
            }),
        )
        .await
        .map_err(|e| fail(format!("tagging the environment: {e}")))?;
    let pushed = tokio::select! {
        r = tokio::time::timeout(limit, push(docker, record, &repository, tag, registry)) => match r {
            Ok(r) => r.map_err(fail),
            Err(_) => Err(fail(format!(
                "no end to the push within {}",
                humantime::format_duration(limit)
            ))),
        },
        _ = cancel.cancelled() => Err(EnvError::Sandbox(SandboxError::Interrupted)),
    };
    // The registry's name for it was only the push's, on every path: the
    // environment stays filed under its own tag, which `env list` and
    // `prune` know.
    let _ = client
        .remove_image(
            &format!("{repository}:{tag}"),
            Some(bollard::query_parameters::RemoveImageOptions {
                noprune: true,
                ..Default::default()
            }),
            None,
        )
        .await;
    pushed
}

/// The push itself, and the digest the engine filed for it.
async fn push(
    docker: &DockerSandbox,
    record: &EnvRecord,
    repository: &str,
    tag: &str,
    registry: &Registry,
) -> Result<String, String> {
    let client = docker.client();
    let mut stream = std::pin::pin!(client.push_image(
        repository,
        Some(PushImageOptions {
            tag: Some(tag.to_string()),
            ..Default::default()
        }),
        credentials(registry.host()),
    ));
    while let Some(item) = stream.next().await {
        item.map_err(|e| e.to_string())?;
    }
    // The engine files the digest the registry gave the pushed manifest.
    let digests = client
        .inspect_image(&record.image_id)
        .await
        .map_err(|e| format!("reading the pushed digest: {e}"))?
        .repo_digests
        .unwrap_or_default();
    pinned(&digests, repository)
        .ok_or_else(|| format!("the engine filed no digest for {repository} after the push"))
}

/// The digest reference of `repository` among an image's repo digests.
fn pinned(digests: &[String], repository: &str) -> Option<String> {
    digests
        .iter()
        .find(|d| {
            d.strip_prefix(repository)
                .is_some_and(|rest| rest.starts_with("@sha256:"))
        })
        .cloned()
}

/// The credentials `docker login HOST` filed in the docker CLI's
/// configuration (`$DOCKER_CONFIG/config.json`, else `~/.docker`), when
/// they are stored there (not in a credential helper): the engine's push
/// API takes them from its client, as the docker CLI sends them.
fn credentials(host: &str) -> Option<DockerCredentials> {
    let dir = match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
    };
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    login_for(&text, host)
}

fn login_for(config: &str, host: &str) -> Option<DockerCredentials> {
    use base64::Engine as _;
    let v: serde_json::Value = serde_json::from_str(config).ok()?;
    let auth = v.get("auths")?.get(host)?.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(DockerCredentials {
        username: Some(user.to_string()),
        password: Some(password.to_string()),
        serveraddress: Some(host.to_string()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_reference_is_the_repository_s_own_digest() {
        let digests = vec![
            "10.0.0.5:5000/autodev-env/python-extra@sha256:aaa".to_string(),
            "10.0.0.5:5000/autodev-env/python@sha256:bbb".to_string(),
        ];
        assert_eq!(
            pinned(&digests, "10.0.0.5:5000/autodev-env/python").as_deref(),
            Some("10.0.0.5:5000/autodev-env/python@sha256:bbb")
        );
        assert_eq!(pinned(&digests, "10.0.0.6:5000/autodev-env/python"), None);
    }

    #[test]
    fn a_login_filed_by_the_docker_cli_is_read_and_nothing_else() {
        // "ci:s3cret:with-colon" in base64, as `docker login` files it.
        let config = r#"{"auths": {"reg.example.org:5000": {"auth": "Y2k6czNjcmV0OndpdGgtY29sb24="},
                         "helper.example.org": {}}, "credsStore": "desktop"}"#;
        let c = login_for(config, "reg.example.org:5000").unwrap();
        assert_eq!(c.username.as_deref(), Some("ci"));
        assert_eq!(c.password.as_deref(), Some("s3cret:with-colon"));
        assert_eq!(c.serveraddress.as_deref(), Some("reg.example.org:5000"));
        assert!(login_for(config, "helper.example.org").is_none());
        assert!(login_for(config, "other.example.org").is_none());
        assert!(login_for("not json", "reg.example.org:5000").is_none());
    }
}

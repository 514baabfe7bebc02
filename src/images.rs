//! Building the sandbox images from `images/NAME/Dockerfile` through the
//! Docker API, tagged `autodev/NAME:latest`.
//!
//! Each Dockerfile takes `ARG BASE`, so a host without a registry can build
//! on a locally made base (see `scripts/offline-base.sh`). [`push`] copies
//! an image from one engine to another through the API (export, import), so
//! a fleet without a registry gets the same image everywhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::query_parameters::BuildImageOptions;
use futures_util::StreamExt;
use thiserror::Error;

use crate::sandbox::docker::DockerSandbox;

/// A failed image build.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ImageError {
    /// No images folder was found.
    #[error("no images folder at {0}: pass --dir PATH to the folder holding NAME/Dockerfile")]
    NoDir(PathBuf),
    /// The name has no Dockerfile.
    #[error("no image named {name:?} in {dir} (available: {available})")]
    Unknown {
        /// Requested name.
        name: String,
        /// Folder searched.
        dir: PathBuf,
        /// Names found.
        available: String,
    },
    /// Packing the build context failed.
    #[error("packing build context {path}: {source}")]
    Context {
        /// The folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Copying an image between engines failed.
    #[error("copying {tag} from {from} to {to} failed: {message}")]
    Push {
        /// The image.
        tag: String,
        /// Source engine.
        from: String,
        /// Target engine.
        to: String,
        /// What went wrong.
        message: String,
    },
    /// The daemon reported a build failure.
    #[error("building {tag} failed: {message}")]
    Build {
        /// Tag being built.
        tag: String,
        /// The daemon's message.
        message: String,
    },
}

/// The tag an image folder is built as.
pub fn tag_for(name: &str) -> String {
    format!("autodev/{name}:latest")
}

/// The folder holding image definitions: `./images` when present, else the
/// one shipped with the source tree this binary was built from.
pub fn default_dir() -> PathBuf {
    let local = PathBuf::from("images");
    if local.join("python/Dockerfile").is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

/// Names of the images defined in `dir`, sorted.
pub fn available(dir: &Path) -> Result<Vec<String>, ImageError> {
    let rd = std::fs::read_dir(dir).map_err(|_| ImageError::NoDir(dir.to_path_buf()))?;
    let mut names: Vec<String> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Dockerfile").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Builds `name` from `dir/name`, reporting build output lines to `progress`.
pub async fn build(
    sandbox: &DockerSandbox,
    dir: &Path,
    name: &str,
    base: Option<&str>,
    mut progress: impl FnMut(&str),
) -> Result<String, ImageError> {
    let names = available(dir)?;
    if !names.iter().any(|n| n == name) {
        return Err(ImageError::Unknown {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            available: names.join(", "),
        });
    }
    let folder = dir.join(name);
    let context = {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.append_dir_all(".", &folder)
            .and_then(|_| b.into_inner())
            .map_err(|source| ImageError::Context {
                path: folder.clone(),
                source,
            })?
    };
    let tag = tag_for(name);
    let mut buildargs = HashMap::new();
    if let Some(base) = base {
        buildargs.insert("BASE".to_string(), base.to_string());
    }
    let opts = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.clone()),
        rm: true,
        forcerm: true,
        buildargs: Some(buildargs),
        ..Default::default()
    };
    let mut stream = sandbox.client().build_image(
        opts,
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    return Err(ImageError::Build {
                        tag,
                        message: detail.message.unwrap_or_else(|| "unknown error".into()),
                    });
                }
                if let Some(line) = info.stream {
                    progress(line.trim_end());
                }
            }
            Err(e) => {
                return Err(ImageError::Build {
                    tag,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(tag)
}

/// Copies `tag` from the engine `from` to the engine `to`, streaming the
/// export into the import (bounded memory whatever the image's size).
pub async fn push(from: &DockerSandbox, to: &DockerSandbox, tag: &str) -> Result<(), ImageError> {
    let fail = |message: String| ImageError::Push {
        tag: tag.to_string(),
        from: from.name().to_string(),
        to: to.name().to_string(),
        message,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    let source = from.client().clone();
    let name = tag.to_string();
    let exporter = tokio::spawn(async move {
        let mut export = std::pin::pin!(source.export_image(&name));
        while let Some(chunk) = export.next().await {
            let item = chunk.map_err(std::io::Error::other);
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut import = std::pin::pin!(to.client().import_image_stream(
        bollard::query_parameters::ImportImageOptions::default(),
        body,
        None,
    ));
    let mut result = Ok(());
    while let Some(item) = import.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    result = Err(fail(detail.message.unwrap_or_default()));
                }
            }
            Err(e) => {
                result = Err(fail(e.to_string()));
                break;
            }
        }
    }
    exporter.abort();
    result?;
    match to.has_image(tag).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(fail(
            "the target engine does not list it after the import".into(),
        )),
        Err(e) => Err(fail(e.to_string())),
    }
}

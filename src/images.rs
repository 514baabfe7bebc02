//! Building the sandbox images from `images/NAME/Dockerfile` through the
//! Docker API, tagged `autodev/NAME:latest`. The definitions are built into
//! the binary, so an installed `autodev` needs no source tree; a folder
//! (`--dir`, or `./images` in the source tree) takes their place when there.
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

impl crate::error::Classify for ImageError {
    fn class(&self) -> crate::error::ErrorClass {
        match self {
            ImageError::Build { .. } => crate::error::ErrorClass::Sandbox,
            _ => crate::error::ErrorClass::Usage,
        }
    }
}

/// A failed image build.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ImageError {
    /// No images folder was found.
    #[error("no images folder at {0}: pass --dir PATH to the folder holding NAME/Dockerfile")]
    NoDir(PathBuf),
    /// The name has no Dockerfile.
    #[error("no image named {name:?} in {place} (available: {available})")]
    Unknown {
        /// Requested name.
        name: String,
        /// Where it was looked for.
        place: String,
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

/// The image definitions built into this binary: name and Dockerfile.
const EMBEDDED: &[(&str, &str)] = &[
    ("go", include_str!("../images/go/Dockerfile")),
    ("java", include_str!("../images/java/Dockerfile")),
    ("node", include_str!("../images/node/Dockerfile")),
    ("python", include_str!("../images/python/Dockerfile")),
    ("rust", include_str!("../images/rust/Dockerfile")),
];

/// Where image definitions come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Definitions {
    /// A folder holding `NAME/Dockerfile` (and whatever else the build needs).
    Dir(PathBuf),
    /// The Dockerfiles built into this binary.
    Embedded,
}

impl Definitions {
    /// `--dir` when given; else `./images` when it holds definitions (the
    /// source tree, where edits should count); else the built-in ones.
    pub fn choose(dir: Option<PathBuf>) -> Self {
        match dir {
            Some(d) => Definitions::Dir(d),
            None if Path::new("images/python/Dockerfile").is_file() => {
                Definitions::Dir(PathBuf::from("images"))
            }
            None => Definitions::Embedded,
        }
    }

    /// Names of the images defined, sorted.
    pub fn available(&self) -> Result<Vec<String>, ImageError> {
        let dir = match self {
            Definitions::Embedded => {
                let mut names: Vec<String> = EMBEDDED.iter().map(|(n, _)| n.to_string()).collect();
                names.sort();
                return Ok(names);
            }
            Definitions::Dir(dir) => dir,
        };
        let rd = std::fs::read_dir(dir).map_err(|_| ImageError::NoDir(dir.to_path_buf()))?;
        let mut names: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| e.path().join("Dockerfile").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Where `name`'s definition is, for messages.
    pub fn describe(&self, name: &str) -> String {
        match self {
            Definitions::Dir(dir) => dir.join(name).display().to_string(),
            Definitions::Embedded => "the Dockerfile built into autodev".into(),
        }
    }

    /// `name` among the definitions, or the error naming those there are.
    pub fn check(&self, name: &str) -> Result<(), ImageError> {
        let names = self.available()?;
        if names.iter().any(|n| n == name) {
            return Ok(());
        }
        Err(ImageError::Unknown {
            name: name.to_string(),
            place: match self {
                Definitions::Dir(d) => d.display().to_string(),
                Definitions::Embedded => "the images built into autodev".into(),
            },
            available: names.join(", "),
        })
    }

    /// The build context of `name`, as a tar.
    fn context(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        let packed = match self {
            Definitions::Dir(dir) => {
                let folder = dir.join(name);
                b.append_dir_all(".", &folder)
                    .and_then(|_| b.into_inner())
                    .map_err(|source| ImageError::Context {
                        path: folder,
                        source,
                    })?
            }
            Definitions::Embedded => {
                let text = EMBEDDED
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| *t)
                    .unwrap_or_default();
                let mut header = tar::Header::new_gnu();
                header.set_size(text.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                b.append_data(&mut header, "Dockerfile", text.as_bytes())
                    .and_then(|_| b.into_inner())
                    .map_err(|source| ImageError::Context {
                        path: PathBuf::from("Dockerfile"),
                        source,
                    })?
            }
        };
        Ok(packed)
    }
}

/// Builds `name` from its definition, reporting build output lines to `progress`.
pub async fn build(
    sandbox: &DockerSandbox,
    defs: &Definitions,
    name: &str,
    base: Option<&str>,
    mut progress: impl FnMut(&str),
) -> Result<String, ImageError> {
    defs.check(name)?;
    let context = defs.context(name)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_definitions_match_the_source_tree_and_pack_as_a_context() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
        let here = Definitions::Dir(root.clone());
        assert_eq!(
            Definitions::Embedded.available().unwrap(),
            here.available().unwrap()
        );
        // A definition needing more than its Dockerfile would build
        // differently from the binary: the built-in context is the file alone.
        for name in here.available().unwrap() {
            let files: Vec<_> = std::fs::read_dir(root.join(&name))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(files, ["Dockerfile"], "images/{name}");
        }
        let ctx = Definitions::Embedded.context("python").unwrap();
        let mut a = tar::Archive::new(&ctx[..]);
        let mut entries = a.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some("Dockerfile"));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut e, &mut text).unwrap();
        assert!(text.contains("ARG BASE"));
        let err = Definitions::Embedded
            .check("nosuch")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("available: go, java, node, python, rust"),
            "{err}"
        );
    }
}

//! `autodev images build|list`.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::ImagesCommand;
use crate::images;
use crate::sandbox::docker::DockerSandbox;

pub(super) async fn images_cmd(cmd: ImagesCommand) -> Result<ExitCode> {
    match cmd {
        ImagesCommand::Build {
            name,
            base,
            dir,
            quiet,
        } => {
            let dir = dir.unwrap_or_else(images::default_dir);
            let names = match name {
                Some(n) => {
                    // An unknown name is reported before anything says "building".
                    let known = images::available(&dir)?;
                    if !known.contains(&n) {
                        return Err(images::ImageError::Unknown {
                            name: n,
                            dir: dir.clone(),
                            available: known.join(", "),
                        }
                        .into());
                    }
                    vec![n]
                }
                None => images::available(&dir)?,
            };
            let sandbox = DockerSandbox::connect().await?;
            for name in names {
                crate::errln!(
                    "autodev: building {} from {}",
                    images::tag_for(&name),
                    dir.join(&name).display()
                );
                let tag = images::build(&sandbox, &dir, &name, base.as_deref(), |line| {
                    if !quiet && !line.is_empty() {
                        crate::errln!("  {line}");
                    }
                })
                .await?;
                crate::errln!("autodev: built {tag}");
            }
            Ok(ExitCode::SUCCESS)
        }
        ImagesCommand::List { dir } => {
            let dir = dir.unwrap_or_else(images::default_dir);
            let sandbox = DockerSandbox::connect().await?;
            for name in images::available(&dir)? {
                let tag = images::tag_for(&name);
                let state = if sandbox.has_image(&tag).await? {
                    "built"
                } else {
                    "not built"
                };
                crate::outln!("{name}\t{tag}\t{state}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

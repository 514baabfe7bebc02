//! `autodev images build|push|list`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::{connect, UsageError};
use crate::cli::{EngineArgs, ImagesCommand};
use autodev::images::{self, Definitions};
use autodev::sandbox::docker::{engine, DockerSandbox};

pub(super) async fn images_cmd(cmd: ImagesCommand) -> Result<ExitCode> {
    match cmd {
        ImagesCommand::Build {
            name,
            base,
            dir,
            quiet,
            engines,
        } => build(name, base, dir, quiet, &engines).await,
        ImagesCommand::Push {
            name,
            from,
            dir,
            engines,
        } => push(name, from, dir, &engines).await,
        ImagesCommand::List { dir, engines } => list(dir, &engines).await,
    }
}

/// `images build`: every engine given builds its own copy.
async fn build(
    name: Option<String>,
    base: Option<String>,
    dir: Option<PathBuf>,
    quiet: bool,
    engines: &EngineArgs,
) -> Result<ExitCode> {
    let defs = Definitions::choose(dir);
    let names = chosen(&defs, name)?;
    let pool = connect(engines).await?;
    let pool = pool.as_docker().ok_or_else(no_docker)?;
    // Every engine given builds its own copy: a fleet without a registry.
    for sandbox in pool.engines() {
        for name in &names {
            autodev::errln!(
                "autodev: building {} from {} on {}",
                images::tag_for(name),
                defs.describe(name),
                sandbox.name()
            );
            let tag = images::build(sandbox, &defs, name, base.as_deref(), |line| {
                if !quiet && !line.is_empty() {
                    autodev::errln!("  {line}");
                }
            })
            .await?;
            autodev::errln!("autodev: built {tag}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `images push`: copies built images from one engine to others.
async fn push(
    name: Option<String>,
    from: Option<String>,
    dir: Option<PathBuf>,
    engines: &EngineArgs,
) -> Result<ExitCode> {
    if engines.engine.is_empty() {
        return Err(UsageError("images push needs at least one --engine to copy to".into()).into());
    }
    let source = match from {
        Some(url) => {
            let tls = super::tls_flags(engines);
            let spec = engine::engines(&[url], &tls, |k| std::env::var(k).ok())?;
            DockerSandbox::connect_to(&spec[0]).await?
        }
        None => DockerSandbox::connect().await?,
    };
    let targets = connect(engines).await?;
    let targets = targets.as_docker().ok_or_else(no_docker)?;
    // DOCKER_HOST names the source by default; when it is also a
    // destination, nothing can be copied.
    if let Some(same) = targets.engines().find(|t| t.name() == source.name()) {
        return Err(UsageError(format!(
            "images push: the source and a destination are the same engine ({}): pass --from ENGINE with the engine that has the images",
            same.name()
        ))
        .into());
    }
    let defs = Definitions::choose(dir);
    let mut tags = Vec::new();
    for n in chosen(&defs, name.clone())? {
        let tag = images::tag_for(&n);
        if source.has_image(&tag).await? {
            tags.push(tag);
        } else if name.is_some() {
            return Err(UsageError(format!(
                "{tag} is not built on {}: run `autodev images build {n}` first",
                source.name()
            ))
            .into());
        }
    }
    for to in targets.engines() {
        for tag in &tags {
            let t = std::time::Instant::now();
            images::push(&source, to, tag).await?;
            autodev::errln!(
                "autodev: copied {tag} from {} to {} in {:.1}s",
                source.name(),
                to.name(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `images list`: which images each engine has.
async fn list(dir: Option<PathBuf>, engines: &EngineArgs) -> Result<ExitCode> {
    let defs = Definitions::choose(dir);
    let pool = connect(engines).await?;
    let pool = pool.as_docker().ok_or_else(no_docker)?;
    for sandbox in pool.engines() {
        for name in defs.available()? {
            let tag = images::tag_for(&name);
            let state = if sandbox.has_image(&tag).await? {
                "built"
            } else {
                "not built"
            };
            autodev::outln!("{name}\t{tag}\t{state}\t{}", sandbox.name());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn no_docker() -> UsageError {
    UsageError("images are built and copied on Docker engines only".into())
}

/// The image names asked for (all defined ones when none); an unknown name
/// is reported before anything says "building".
fn chosen(defs: &Definitions, name: Option<String>) -> Result<Vec<String>, images::ImageError> {
    match name {
        Some(n) => defs.check(&n).map(|()| vec![n]),
        None => defs.available(),
    }
}

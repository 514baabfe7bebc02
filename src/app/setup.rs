//! The set-up phase as the subcommands that run tests see it: find or
//! build the project's environment, point the run at it, and turn a
//! failed set-up into the run's `setup_failed` outcome.

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use autodev::env::{CacheUse, EnvError, EnvRecord, SetupMode, SetupSettings};
use autodev::sandbox::{AnySandbox, Outcome, OutputSink, RunSpec, Verdict};

/// `Ok(Ok(env))`: go on, with `spec` pointing at the environment's image
/// when there is one; `Ok(Err(outcome))`: the set-up failed and that is
/// the run's outcome; `Err`: nothing could be decided (an engine fault).
pub(super) async fn environment(
    sandbox: &AnySandbox,
    spec: &mut RunSpec,
    profile: &str,
    settings: &SetupSettings,
    sink: &mut dyn OutputSink,
    cancel: &CancellationToken,
) -> Result<Result<Option<EnvRecord>, Outcome>> {
    match autodev::env::ensure_on(sandbox, spec, profile, settings, sink, cancel).await {
        Ok(Some(r)) => {
            let how = match r.cache {
                CacheUse::Hit => "cached".to_string(),
                CacheUse::Miss => format!("built in {:.1}s", r.setup_ms as f64 / 1000.0),
            };
            autodev::errln!("autodev: environment {} ({how}): {}", r.image, r.setup);
            spec.image = r.image_id.clone();
            Ok(Ok(Some(r)))
        }
        Ok(None) => Ok(Ok(None)),
        Err(EnvError::Unsupported(m)) if settings.mode == SetupMode::Detect => {
            autodev::errln!("autodev: warning: {m}");
            Ok(Ok(None))
        }
        Err(EnvError::SetupFailed { reason, outcome }) => {
            let mut o = *outcome;
            o.verdict = Verdict::SetupFailed;
            o.error = Some(reason);
            Ok(Err(o))
        }
        Err(EnvError::Sandbox(e)) => Err(e.into()),
        Err(e) => Err(e.into()),
    }
}

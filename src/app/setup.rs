//! The set-up phase as `exec` shows it: which environment the run got, on
//! stderr, or why it goes on without one.

use autodev::env::{CacheUse, Ready};

/// Says on stderr what the set-up phase gave the run (a failure is the
/// run's outcome, reported as any other).
pub(super) fn report(ready: &Ready) {
    match ready {
        Ready::Env(Some(r)) => {
            let how = match r.cache {
                CacheUse::Hit => "cached".to_string(),
                CacheUse::Miss => format!("built in {:.1}s", r.setup_ms as f64 / 1000.0),
            };
            autodev::errln!("autodev: environment {} ({how}): {}", r.image, r.setup);
        }
        Ready::Skipped(why) => autodev::errln!("autodev: warning: {why}"),
        Ready::Env(None) | Ready::Failed(_) => {}
    }
}

//! Which class an error is, found by walking its chain: the one place that
//! knows every boundary error type of the engine. It sits above them all
//! (nothing in the engine imports it); front ends ask it.

use std::error::Error;

use crate::error::{Classify, ErrorClass};

/// The class of the first error in `err`'s chain that knows its own, or
/// `None` when none of them does. Outer errors win: a batch that failed
/// before its first task says so, whatever the sandbox error under it.
pub fn class_of(err: &(dyn Error + 'static)) -> Option<ErrorClass> {
    let mut cur = Some(err);
    // A chain is short; the bound only guards against a cycle.
    for _ in 0..64 {
        let e = cur?;
        if let Some(class) = own_class(e) {
            return Some(class);
        }
        cur = e.source();
    }
    None
}

fn own_class(e: &(dyn Error + 'static)) -> Option<ErrorClass> {
    fn of<T: Classify + Error + 'static>(e: &(dyn Error + 'static)) -> Option<ErrorClass> {
        e.downcast_ref::<T>().map(Classify::class)
    }
    of::<crate::agent::AgentError>(e)
        .or_else(|| of::<crate::batch::BatchError>(e))
        .or_else(|| of::<crate::model::ModelError>(e))
        .or_else(|| of::<crate::sandbox::SandboxError>(e))
        .or_else(|| of::<crate::config::ConfigError>(e))
        .or_else(|| of::<crate::workspace::WorkspaceError>(e))
        .or_else(|| of::<crate::images::ImageError>(e))
        .or_else(|| of::<crate::env::EnvError>(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxError;

    #[test]
    fn the_outer_class_wins_and_unknown_errors_are_none() {
        let inner = SandboxError::CopyFailed("tar broke".into());
        assert_eq!(class_of(&inner), Some(ErrorClass::Sandbox));
        let batch = crate::batch::BatchError::Sandbox(SandboxError::Settings("bad".into()));
        assert_eq!(class_of(&batch), Some(ErrorClass::Usage));
        let unsupported = crate::env::EnvError::Unsupported("no set-up here".into());
        assert_eq!(class_of(&unsupported), Some(ErrorClass::Usage));
        let io = std::io::Error::other("x");
        assert_eq!(class_of(&io), None);
    }
}

//! One classification of failure for every front end.
//!
//! Each error enum at a module boundary says which [`ErrorClass`] it is
//! (the [`Classify`] trait); a front end maps the class, never the type: the
//! CLI to an exit code ([`ErrorClass::exit_code`]), the service to an HTTP
//! status ([`ErrorClass::http_status`]). A new error type implements
//! `Classify` and joins `classify::class_of`; no front end changes.

use crate::exit;

/// What kind of failure an error is, as a caller must react to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The caller's input is wrong (flags, task, workspace, settings): fix it
    /// and ask again; trying again unchanged fails the same way.
    Usage,
    /// The model API failed or refused.
    Model,
    /// The sandbox infrastructure failed (engine, image, copy): the run's
    /// code is not to blame, and trying again may succeed.
    Sandbox,
    /// Cancelled by the caller (a signal, a cancelled request).
    Interrupted,
    /// The result could not be written (a full disk, say).
    Output,
    /// None of the above: a bug, or an error no boundary classified.
    Internal,
}

impl ErrorClass {
    /// The process exit status the CLI ends with.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorClass::Usage => exit::USAGE,
            ErrorClass::Model => exit::MODEL,
            ErrorClass::Sandbox => exit::SANDBOX,
            ErrorClass::Interrupted => exit::INTERRUPTED,
            ErrorClass::Output => exit::OUTPUT,
            ErrorClass::Internal => exit::FAILED,
        }
    }

    /// The HTTP status a service answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorClass::Usage => 400,
            ErrorClass::Model => 502,
            ErrorClass::Sandbox => 503,
            // The client went away or cancelled: nginx's "client closed request".
            ErrorClass::Interrupted => 499,
            ErrorClass::Output | ErrorClass::Internal => 500,
        }
    }

    /// The class's name as JSON and logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Usage => "usage",
            ErrorClass::Model => "model",
            ErrorClass::Sandbox => "sandbox",
            ErrorClass::Interrupted => "interrupted",
            ErrorClass::Output => "output",
            ErrorClass::Internal => "internal",
        }
    }
}

/// An error that knows its class.
pub trait Classify {
    /// Which class this error is.
    fn class(&self) -> ErrorClass;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_a_distinct_exit_code() {
        let all = [
            ErrorClass::Usage,
            ErrorClass::Model,
            ErrorClass::Sandbox,
            ErrorClass::Interrupted,
            ErrorClass::Output,
            ErrorClass::Internal,
        ];
        let mut codes: Vec<u8> = all.iter().map(|c| c.exit_code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}

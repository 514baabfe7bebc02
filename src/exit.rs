//! Exit codes, written once: every subcommand's process status and every
//! verdict's code come from here (docs/exec.md lists them).

/// Tests passed / command succeeded.
pub const OK: u8 = 0;
/// Tests failed.
pub const FAILED: u8 = 1;
/// Bad flags, bad task file, bad workspace: nothing ran.
pub const USAGE: u8 = 2;
/// The model API failed (after retries) or refused the request.
pub const MODEL: u8 = 3;
/// The command ran, but no test did (none collected, or all skipped).
pub const NO_TESTS: u8 = 5;
/// The command exited 0 without the evidence a pass needs (the runner's report).
pub const UNVERIFIED: u8 = 6;
/// The set-up phase could not install the project's dependencies.
pub const SETUP_FAILED: u8 = 7;
/// Output could not be written (a full disk, say); a closed pipe is not an error.
pub const OUTPUT: u8 = 74;
/// The wall-clock limit passed.
pub const TIMED_OUT: u8 = 124;
/// The sandbox infrastructure failed (daemon, image, copy).
pub const SANDBOX: u8 = 125;
/// Interrupted by Ctrl-C or SIGTERM; everything was cleaned up.
pub const INTERRUPTED: u8 = 130;
/// A process was killed for exceeding the memory limit.
pub const OOM: u8 = 137;

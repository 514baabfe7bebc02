//! autodev's engine: a language model writes and repairs code; every line it
//! writes runs inside a fresh, locked-down sandbox.
//!
//! The front ends (the `autodev` binary's `cli` and `app`, later the service
//! and the MCP server) sit on top of this library and share its settings,
//! errors and verdicts; nothing here knows which front end calls it.
//!
//! Module map, ground floor first:
//! - [`exit`], [`error`]: exit codes, and the one classification of failure
//!   ([`error::ErrorClass`]) every front end maps to its own status.
//! - [`term`], [`text`]: writing to the terminal (`outln!`, `errln!`) and
//!   cutting long text.
//! - [`dirs`]: where autodev keeps its own files for this user.
//! - [`config`]: limits and settings, validated once; the keys a file or a
//!   task line may set, and how far.
//! - [`profile`]: language profiles (image, test command, excludes) and their
//!   detection.
//! - [`workspace`]: the host folder: copy manifest, tar stream, context,
//!   export, git, reset.
//! - [`sandbox`]: the `Sandbox` seam and its Docker, Kubernetes and socket
//!   backends; verdicts, limits, output capture.
//! - [`model`]: model clients (OpenAI-compatible, Ollama, replay).
//! - [`patch`]: model replies to files, confined to the workspace.
//! - [`events`]: what happens in a run ([`events::RunEvent`]) and the
//!   [`events::Observer`] seam every front end listens on.
//! - [`agent`]: the repair loop over a model and a sandbox.
//! - [`batch`]: many tasks, bounded concurrency, one result line each.
//! - [`env`](mod@env): dependency environments: the set-up phase, its egress proxy
//!   and allowlist, and the image cache keyed by the project's manifests.
//! - [`doctor`]: proving each guarantee of the sandbox on this host.
//! - [`images`]: building the sandbox images.
//! - [`report`]: the transcript and what the terminal shows (a leaf: no
//!   engine module below it imports it).
//! - [`classify`]: which [`error::ErrorClass`] an error is, whatever its
//!   type (it knows every module's errors, so it sits on top).

#![warn(missing_docs, unreachable_pub)]

pub mod agent;
pub mod batch;
pub mod classify;
pub mod config;
pub mod dirs;
pub mod doctor;
pub mod env;
pub mod error;
pub mod events;
pub mod exit;
pub mod images;
pub mod model;
pub mod patch;
pub mod profile;
pub mod report;
pub mod sandbox;
pub mod term;
pub mod text;
pub mod workspace;

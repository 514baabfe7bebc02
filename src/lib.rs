//! autodev: a language model writes and repairs code; every line it writes
//! runs inside a fresh, locked-down Docker container.
//!
//! Module map:
//! - [`config`]: limits and settings, validated once.
//! - [`sandbox`]: the `Sandbox` trait, the Docker and Kubernetes executors, a fake for tests.
//! - [`doctor`]: proving each guarantee of the sandbox on this host.
//! - [`workspace`]: the host folder: copy manifest, tar stream, context, export.
//! - [`images`]: building the sandbox images from `images/*/Dockerfile`.

pub mod agent;
pub mod app;
pub mod batch;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod images;
pub mod model;
pub mod patch;
pub mod profile;
pub mod report;
pub mod sandbox;
pub mod workspace;

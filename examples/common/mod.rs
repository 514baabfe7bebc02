//! What every benchmark needs: the binary under test, the image, medians.
//! (A folder, not `examples/common.rs`: Cargo would take that for an example.)

#![allow(dead_code)] // each benchmark uses a part

use std::path::{Path, PathBuf};

/// The release binary (`AUTODEV_BIN` overrides); panics with what to do
/// when it is not built.
pub fn binary() -> PathBuf {
    let bin = std::env::var("AUTODEV_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/autodev"));
    assert!(
        bin.is_file(),
        "{} not found: cargo build --release first",
        bin.display()
    );
    bin
}

/// The image the tasks run in (`AUTODEV_BENCH_IMAGE` overrides).
pub fn image() -> String {
    std::env::var("AUTODEV_BENCH_IMAGE").unwrap_or_else(|_| "autodev/python:latest".into())
}

/// The middle value (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

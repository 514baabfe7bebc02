//! Fuzzes the patch parser and path confinement: no input may panic, and no
//! accepted path may land outside the workspace, even through a symlink.
#![no_main]

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use autodev::patch::{self, apply::confine, ApplyOptions};
use libfuzzer_sys::fuzz_target;

struct Arena {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn arena() -> &'static Arena {
    static A: OnceLock<Arena> = OnceLock::new();
    A.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("ws");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).expect("ws");
        std::fs::create_dir_all(&outside).expect("outside");
        std::os::unix::fs::symlink(&outside, root.join("link")).expect("link");
        Arena { _dir: dir, root, outside }
    })
}

fn lexically_inside(root: &Path, rel: &Path) -> bool {
    rel.is_relative() && rel.components().all(|c| matches!(c, Component::Normal(_))) && root.join(rel).starts_with(root)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = patch::parse(&text);
    let a = arena();
    for b in &parsed.blocks {
        if let Some(c) = b.content() {
            assert!(c.ends_with('\n'));
        }
        if let Ok(rel) = confine(&b.path) {
            assert!(lexically_inside(&a.root, &rel), "accepted {:?} as {:?}", b.path, rel);
        }
    }
    if parsed.blocks.is_empty() {
        return;
    }
    let report = patch::apply(&a.root, &parsed, ApplyOptions { max_file_bytes: 4096 });
    for p in &report.applied {
        assert!(lexically_inside(&a.root, Path::new(p)), "applied outside: {p:?}");
    }
    let escaped = std::fs::read_dir(&a.outside).map(|d| d.count()).unwrap_or(0);
    assert_eq!(escaped, 0, "a write went through the symlink");
    // Keep the arena small: remove what was written (never the link).
    for p in &report.applied {
        let first = Path::new(p).components().next().map(|c| a.root.join(c.as_os_str()));
        if let Some(top) = first.filter(|t| !t.ends_with("link")) {
            let _ = std::fs::remove_dir_all(&top).or_else(|_| std::fs::remove_file(&top));
        }
    }
});

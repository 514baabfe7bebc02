//! A short fuzz smoke on stable Rust, run in every CI: the corpus that
//! `scripts/fuzz.sh` grew (`fuzz/corpus/patch`), then seeded mutations of
//! it, through the patch parser, path confinement and the applier, with
//! the fuzz target's checks: nothing panics, no accepted path leaves the
//! workspace, no write goes through a symlink. The coverage-guided run
//! (`cargo fuzz`, nightly) stays in `scripts/fuzz.sh`.

use std::path::{Component, Path};

use autodev::patch::{self, apply::confine, ApplyOptions};

/// Mutations per corpus input: bounded, so the smoke takes seconds.
const MUTATIONS: usize = 12;

fn lexically_inside(rel: &Path) -> bool {
    rel.is_relative() && rel.components().all(|c| matches!(c, Component::Normal(_)))
}

/// The fuzz target's checks on one input.
fn check(data: &[u8], root: &Path, outside: &Path) {
    let text = String::from_utf8_lossy(data);
    let parsed = patch::parse(&text);
    for b in &parsed.blocks {
        if let Some(c) = b.content() {
            assert!(c.ends_with('\n'), "{text:?}");
        }
        if let Ok(rel) = confine(&b.path) {
            assert!(lexically_inside(&rel), "accepted {:?} as {:?}", b.path, rel);
        }
    }
    if parsed.blocks.is_empty() {
        return;
    }
    let report = patch::apply(
        root,
        &parsed,
        ApplyOptions {
            max_file_bytes: 4096,
        },
    );
    for p in &report.applied {
        assert!(lexically_inside(Path::new(p)), "applied outside: {p:?}");
    }
    let escaped = std::fs::read_dir(outside).map(|d| d.count()).unwrap_or(0);
    assert_eq!(escaped, 0, "a write went through the symlink: {text:?}");
    // Keep the workspace small: remove what was written (never the link).
    for p in &report.applied {
        if let Some(top) = Path::new(p).components().next() {
            let top = root.join(top.as_os_str());
            if !top.ends_with("link") {
                let _ = std::fs::remove_dir_all(&top).or_else(|_| std::fs::remove_file(&top));
            }
        }
    }
}

/// One random edit: flip, insert or delete a byte, or splice in a token
/// the parser and the confinement care about.
fn mutate(rng: &mut fastrand::Rng, data: &mut Vec<u8>) {
    const TOKENS: &[&[u8]] = &[
        b"PATCH::",
        b"ENDPATCH",
        b"DELETE::",
        b"../",
        b"link/",
        b"/",
        b".git/",
        b"\n",
        b"\r\n",
        b"\0",
        b"```",
    ];
    match rng.u8(0..4) {
        0 if !data.is_empty() => {
            let i = rng.usize(0..data.len());
            data[i] ^= 1 << rng.u8(0..8);
        }
        1 => {
            let i = rng.usize(0..=data.len());
            data.insert(i, rng.u8(..));
        }
        2 if !data.is_empty() => {
            data.remove(rng.usize(0..data.len()));
        }
        _ => {
            let i = rng.usize(0..=data.len());
            let t = TOKENS[rng.usize(0..TOKENS.len())];
            data.splice(i..i, t.iter().copied());
        }
    }
}

#[test]
fn corpus_and_its_mutations_keep_every_write_inside_the_workspace() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/patch");
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() > 100,
        "the corpus is missing: {}",
        corpus.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    // Seeded: a failure names an input that can be found again.
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut runs = 0;
    for input in &inputs {
        check(input, &root, &outside);
        let mut data = input.clone();
        for _ in 0..MUTATIONS {
            mutate(&mut rng, &mut data);
            data.truncate(64 * 1024);
            check(&data, &root, &outside);
            runs += 1;
        }
    }
    eprintln!(
        "fuzz smoke: {} corpus inputs, {runs} mutations",
        inputs.len()
    );
}

//! The engine's module structure, checked from the source: the top-level
//! modules import each other without a circle, the front end's report is a
//! leaf no engine module imports, and the library never reaches into the
//! binary's `cli` or `app`. A change that adds an arrow back up fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules of the library and, for each, those it imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut tops = BTreeSet::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().replace(".rs", "");
        if !["main", "lib", "app", "cli"].contains(&name.as_str()) {
            tops.insert(name);
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .replace(".rs", "");
            if !tops.contains(&top) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // What tests import is not the engine's structure.
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if name != top && (tops.contains(&name) || name == "cli" || name == "app") {
                    edges.entry(top.clone()).or_default().insert(name);
                }
            }
        }
    }
    edges
}

#[test]
fn top_level_modules_import_each_other_without_a_circle() {
    let g = graph();
    // Depth-first search for a path from a module back to itself.
    fn back_to(
        g: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        for next in g.get(at).into_iter().flatten() {
            if next == start {
                let mut p = path.clone();
                p.push(next.clone());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if let Some(p) = back_to(g, start, next, path, seen) {
                    return Some(p);
                }
                path.pop();
            }
        }
        None
    }
    for m in g.keys() {
        let circle = back_to(&g, m, m, &mut vec![m.clone()], &mut BTreeSet::new());
        assert!(
            circle.is_none(),
            "a circle: {}",
            circle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn report_is_a_leaf_and_the_engine_never_imports_the_front_end() {
    let g = graph();
    for (m, to) in &g {
        assert!(
            !to.contains("report"),
            "{m} imports report, a front-end leaf"
        );
        assert!(
            !to.contains("cli") && !to.contains("app"),
            "{m} imports the binary's front end"
        );
    }
    // The graph is not empty: the scan found the engine.
    assert!(g.get("agent").is_some_and(|t| t.contains("sandbox")));
}

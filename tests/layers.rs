//! The source tree's layering (see `src/lib.rs`): the sans-IO core imports
//! nothing async and nothing from the edge; the top-level traits and types
//! import neither.

use std::path::Path;

fn sources(folder: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(folder);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a source file");
            (path.display().to_string(), text)
        })
        .collect();
    files.sort();
    files
}

/// Lines of code (not comments) in `files` that contain any of `needles`.
fn offending(files: &[(String, String)], needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if let Some(needle) = needles.iter().find(|needle| code.contains(*needle)) {
                found.push(format!("{path}:{}: `{needle}` in {code}", n + 1));
            }
        }
    }
    found
}

#[test]
fn the_core_imports_nothing_async_and_nothing_from_the_edge() {
    let core = sources("core");
    assert!(core.len() >= 10, "src/core has the sans-IO modules");
    let found = offending(
        &core,
        &[
            "crate::edge",
            "async ",
            ".await",
            "futures",
            "Waker",
            "std::task",
            "Timer",
        ],
    );
    assert!(
        found.is_empty(),
        "the core must stay sans-IO:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_top_level_imports_neither_layer() {
    let top: Vec<_> = sources("")
        .into_iter()
        .filter(|(path, _)| !path.ends_with("lib.rs") && !path.ends_with("testing.rs"))
        .collect();
    assert!(top.iter().any(|(path, _)| path.ends_with("host.rs")));
    let found = offending(&top, &["crate::core", "crate::edge"]);
    assert!(
        found.is_empty(),
        "traits and value types stay below both layers:\n{}",
        found.join("\n")
    );
}

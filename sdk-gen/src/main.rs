//! `sdk-gen` will generate Herald's Rust, Python and TypeScript SDKs from `proto/`.
//!
//! Until the SDK work lands it only lists the protobuf files it would read, so that the
//! workspace layout is stable and CI builds the crate.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/herald/v1");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        println!("{}", file.display());
    }
}

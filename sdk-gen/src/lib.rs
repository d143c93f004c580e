//! `sdk-gen` writes the parts of Herald's SDKs that follow from `proto/`: each language's
//! event catalog constants, and the RPC stubs of the languages whose stock generator runs
//! outside the build ([`stubs`]: `grpcio-tools` for Python, `protoc-gen-es` for TypeScript,
//! both fed what protox compiles; Rust's come from tonic at build time), so their output is
//! checked the same way.
//!
//! Generation is a pure function of the `.proto` files, so the same input gives the same
//! bytes; `--check` compares instead of writing, which is how CI notices a catalog change
//! that was not regenerated.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub mod catalog;
pub mod render;
pub mod stubs;

/// One file to write, its path relative to the repository root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFile {
    pub path: PathBuf,
    pub contents: String,
}

/// Everything generated from the `.proto` files under `proto_root`, in a fixed order.
pub fn generate(proto_root: &Path) -> Result<Vec<GeneratedFile>> {
    let entries = catalog::load(proto_root)?;
    let mut files = vec![
        GeneratedFile {
            path: "sdks/rust/src/catalog.rs".into(),
            contents: render::rust::render(&entries),
        },
        GeneratedFile {
            path: "sdks/python/herald_sdk/catalog.py".into(),
            contents: render::python::render(&entries),
        },
        GeneratedFile {
            path: "sdks/typescript/src/catalog.ts".into(),
            contents: render::typescript::render(&entries),
        },
    ];
    // The stubs are made by stock generators that run beside `proto/`, in the repository.
    let root = proto_root.parent().unwrap_or(Path::new("."));
    files.extend(stubs::python::generate(root)?);
    files.extend(stubs::typescript::generate(root)?);
    Ok(files)
}

/// The files under `root` that are missing or differ from `files`.
pub fn stale(root: &Path, files: &[GeneratedFile]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for file in files {
        let path = root.join(&file.path);
        match std::fs::read(&path) {
            Ok(bytes) if bytes == file.contents.as_bytes() => {}
            Ok(_) => out.push(file.path.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(file.path.clone()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(out)
}

/// Writes the stale files under `root` and returns them. Up-to-date files are not
/// touched, so their modification time does not trigger rebuilds.
pub fn write(root: &Path, files: &[GeneratedFile]) -> Result<Vec<PathBuf>> {
    let changed = stale(root, files)?;
    for file in files.iter().filter(|f| changed.contains(&f.path)) {
        let path = root.join(&file.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, &file.contents)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn same_input_same_bytes() {
        let a = generate(&repo_root().join("proto")).unwrap();
        let b = generate(&repo_root().join("proto")).unwrap();
        assert_eq!(a, b);
        let paths: Vec<_> = a.iter().map(|f| f.path.to_str().unwrap()).collect();
        assert_eq!(
            paths[..3],
            [
                "sdks/rust/src/catalog.rs",
                "sdks/python/herald_sdk/catalog.py",
                "sdks/typescript/src/catalog.ts"
            ]
        );
        assert!(paths.contains(&"sdks/python/herald_sdk/_proto/herald/v1/events_pb2_grpc.py"));
        assert!(paths.contains(&"sdks/typescript/src/gen/herald/v1/events_pb.ts"));
        // Every language names every event type.
        for file in &a[..3] {
            assert!(
                file.contents.contains("LICENSE_CHECK_IN_REQUIRED_SOON"),
                "{:?}",
                file.path
            );
            assert!(
                file.contents.contains("\"license.check-in-required-soon\""),
                "{:?}",
                file.path
            );
        }
    }

    #[test]
    fn check_names_the_stale_files_and_write_fixes_them() {
        let files = generate(&repo_root().join("proto")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Nothing written yet: every file is missing.
        assert_eq!(stale(dir.path(), &files).unwrap().len(), files.len());
        assert_eq!(write(dir.path(), &files).unwrap().len(), files.len());
        assert!(stale(dir.path(), &files).unwrap().is_empty());
        // A second run writes nothing.
        assert!(write(dir.path(), &files).unwrap().is_empty());
        // One edited file is named, and only it.
        let py = dir.path().join("sdks/python/herald_sdk/catalog.py");
        std::fs::write(
            &py,
            files[1].contents.replace("license.created", "license.made"),
        )
        .unwrap();
        assert_eq!(
            stale(dir.path(), &files).unwrap(),
            [PathBuf::from("sdks/python/herald_sdk/catalog.py")]
        );
        assert_eq!(write(dir.path(), &files).unwrap().len(), 1);
        assert_eq!(std::fs::read_to_string(py).unwrap(), files[1].contents);
    }

    #[test]
    fn the_committed_sdks_are_current() {
        let files = generate(&repo_root().join("proto")).unwrap();
        let stale = stale(&repo_root(), &files).unwrap();
        assert!(
            stale.is_empty(),
            "run `cargo run -p sdk-gen` and commit: {stale:?} differ"
        );
    }

    #[test]
    fn texts_are_escaped_for_every_language() {
        let entry = catalog::Entry {
            number: 1,
            constant: "ODD_THING".into(),
            name: "odd.thing".into(),
            trigger: "When \"quotes\", a \\ and */ appear\nacross lines".into(),
            payload: "The thing".into(),
            resource_type: "things".into(),
            list: true,
            also_accepts: vec!["stuff".into()],
        };
        let rust = render::rust::render(std::slice::from_ref(&entry));
        assert!(rust.contains(r#"trigger: "When \"quotes\", a \\ and */ appear\nacross lines","#));
        assert!(
            rust.contains("/// `odd.thing`: When \"quotes\", a \\ and */ appear across lines.")
        );
        assert!(rust.contains("shape: PayloadShape::List,"));
        assert!(rust.contains(r#"also_accepts: &["stuff"],"#));
        let py = render::python::render(std::slice::from_ref(&entry));
        assert!(py.contains(r#"trigger="When \"quotes\", a \\ and */ appear\nacross lines","#));
        assert!(py.contains(r#"also_accepts=("stuff",),"#));
        let ts = render::typescript::render(std::slice::from_ref(&entry));
        assert!(ts.contains(r#"trigger: "When \"quotes\", a \\ and */ appear\nacross lines","#));
        // The doc comment cannot be closed early by the text.
        assert!(ts.contains(r"a \ and *\/ appear across lines"));
    }
}

//! The `sdk-gen` binary as CI runs it: `--check` on a tree it generated passes, and on an
//! edited tree fails naming the file; a plain run repairs it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sdk_gen(root: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sdk-gen"));
    // A scratch root has no venv nor node_modules: the stubs come from the repository's
    // generators (or the caller's).
    if std::env::var_os("SDK_GEN_PYTHON").is_none() {
        command.env(
            "SDK_GEN_PYTHON",
            repo_root().join("sdks/python/.venv/bin/python"),
        );
    }
    if std::env::var_os(sdk_gen::stubs::typescript::PLUGIN_ENV).is_none() {
        command.env(
            sdk_gen::stubs::typescript::PLUGIN_ENV,
            repo_root().join(sdk_gen::stubs::typescript::PLUGIN),
        );
    }
    command
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .expect("sdk-gen runs")
}

/// A scratch repository holding a copy of `proto/herald/v1`.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("proto/herald/v1");
    std::fs::create_dir_all(&v1).unwrap();
    for entry in std::fs::read_dir(repo_root().join("proto/herald/v1")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, v1.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn check_fails_until_generated_then_passes() {
    let dir = scratch();
    let out = sdk_gen(dir.path(), &["--check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sdks/rust/src/catalog.rs"), "{stderr}");
    assert!(
        stderr.contains("sdks/typescript/src/catalog.ts"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sdks/python/herald_sdk/_proto/herald/v1/events_pb2.py"),
        "{stderr}"
    );

    let out = sdk_gen(dir.path(), &[]);
    assert!(out.status.success(), "{out:?}");
    let first = std::fs::read(dir.path().join("sdks/rust/src/catalog.rs")).unwrap();
    assert!(sdk_gen(dir.path(), &["--check"]).status.success());

    // A second run in a fresh tree gives the same bytes.
    let other = scratch();
    assert!(sdk_gen(other.path(), &[]).status.success());
    assert_eq!(
        std::fs::read(other.path().join("sdks/rust/src/catalog.rs")).unwrap(),
        first
    );
    let stub = "sdks/python/herald_sdk/_proto/herald/v1/events_pb2_grpc.py";
    assert_eq!(
        std::fs::read(other.path().join(stub)).unwrap(),
        std::fs::read(dir.path().join(stub)).unwrap()
    );
}

#[test]
fn a_missing_python_names_the_setup_script() {
    let dir = scratch();
    let out = Command::new(env!("CARGO_BIN_EXE_sdk-gen"))
        .arg("--root")
        .arg(dir.path())
        .env("SDK_GEN_PYTHON", dir.path().join("no-such-python"))
        .output()
        .expect("sdk-gen runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scripts/setup-python-sdk"), "{stderr}");
}

#[test]
fn check_names_a_hand_edited_file() {
    let dir = scratch();
    assert!(sdk_gen(dir.path(), &[]).status.success());
    let ts = dir.path().join("sdks/typescript/src/catalog.ts");
    let edited = std::fs::read_to_string(&ts)
        .unwrap()
        .replace("licenses", "licences");
    std::fs::write(&ts, edited).unwrap();
    let out = sdk_gen(dir.path(), &["--check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sdks/typescript/src/catalog.ts"),
        "{stderr}"
    );
    assert!(!stderr.contains("sdks/rust/src/catalog.rs"), "{stderr}");
}

#[test]
fn a_catalog_change_makes_check_fail() {
    let dir = scratch();
    assert!(sdk_gen(dir.path(), &[]).status.success());
    let catalog = dir.path().join("proto/herald/v1/catalog.proto");
    let changed = std::fs::read_to_string(&catalog)
        .unwrap()
        .replace("When a license is created", "When a license comes to be");
    std::fs::write(&catalog, changed).unwrap();
    let out = sdk_gen(dir.path(), &["--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sdks/python/herald_sdk/catalog.py"));
}

#[test]
fn bad_arguments_and_broken_protos_exit_2() {
    let dir = scratch();
    assert_eq!(
        sdk_gen(dir.path(), &["--frobnicate"]).status.code(),
        Some(2)
    );
    std::fs::write(
        dir.path().join("proto/herald/v1/broken.proto"),
        "syntax = \"proto3\"; message {",
    )
    .unwrap();
    let out = sdk_gen(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.proto"),
        "{out:?}"
    );
}

#[test]
fn typescript_stubs_are_checked_and_a_missing_plugin_names_the_setup_script() {
    let dir = scratch();
    assert!(sdk_gen(dir.path(), &[]).status.success());
    let stub = dir
        .path()
        .join("sdks/typescript/src/gen/herald/v1/endpoints_pb.ts");
    let edited = std::fs::read_to_string(&stub).unwrap() + "// edited\n";
    std::fs::write(&stub, edited).unwrap();
    let out = sdk_gen(dir.path(), &["--check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sdks/typescript/src/gen/herald/v1/endpoints_pb.ts"),
        "{stderr}"
    );

    let mut command = Command::new(env!("CARGO_BIN_EXE_sdk-gen"));
    // The Python stubs come first: they must be generated for the plugin to be looked for.
    if std::env::var_os("SDK_GEN_PYTHON").is_none() {
        command.env(
            "SDK_GEN_PYTHON",
            repo_root().join("sdks/python/.venv/bin/python"),
        );
    }
    let out = command
        .env(
            sdk_gen::stubs::typescript::PLUGIN_ENV,
            dir.path().join("no/such/protoc-gen-es"),
        )
        .arg("--root")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scripts/setup-typescript-sdk"), "{stderr}");
}

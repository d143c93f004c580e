//! The Python SDK's gRPC stubs (`sdks/python/herald_sdk/_proto/`), made by the stock
//! generator, `grpcio-tools` (pinned in `sdks/python/requirements-dev.txt`), from the same
//! descriptors as the catalog (protox), so protoc's own parser and include paths play no part.
//!
//! protoc writes absolute imports (`from herald.v1 import catalog_pb2`), which only work with
//! the output directory on `sys.path`; they are rewritten to the package's own path so the
//! stubs import as `herald_sdk._proto.herald.v1.…` from an installed wheel.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::{GeneratedFile, catalog};

/// Where the stubs go, relative to the repository root.
pub const OUT_DIR: &str = "sdks/python/herald_sdk/_proto";
/// The interpreter with `grpcio-tools`, relative to the repository root.
pub const VENV_PYTHON: &str = "sdks/python/.venv/bin/python";
/// Overrides [`VENV_PYTHON`].
pub const PYTHON_ENV: &str = "SDK_GEN_PYTHON";
/// The Python package the stubs live in.
const PACKAGE: &str = "herald_sdk._proto";

/// The interpreter to run `grpc_tools.protoc` with: `$SDK_GEN_PYTHON`, or the SDK's venv.
pub fn python(root: &Path) -> Result<PathBuf> {
    let python = match std::env::var_os(PYTHON_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => root.join(VENV_PYTHON),
    };
    if !python.exists() {
        bail!(
            "{} does not exist: run `scripts/setup-python-sdk` (it creates the venv with the \
             pinned grpcio-tools), or point {PYTHON_ENV} at a Python that has it",
            python.display()
        );
    }
    Ok(python)
}

/// The stubs for the `.proto` files under `root/proto`, in a fixed order: for each file,
/// `_pb2.py`, `_pb2.pyi`, `_pb2_grpc.py`, then the packages' `__init__.py`s.
pub fn generate(root: &Path) -> Result<Vec<GeneratedFile>> {
    let proto_root = root.join("proto");
    let python = python(root)?;
    let files = catalog::proto_files(&proto_root)?;
    let mut compiler = protox::Compiler::new([&proto_root])
        .with_context(|| format!("opening {}", proto_root.display()))?;
    compiler
        .include_imports(true)
        .open_files(&files)
        .map_err(|e| anyhow!("compiling {}: {e}", proto_root.display()))?;

    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let descriptors = work.path().join("herald.binpb");
    std::fs::write(&descriptors, compiler.encode_file_descriptor_set())
        .with_context(|| format!("writing {}", descriptors.display()))?;
    let out = work.path().join("out");
    std::fs::create_dir(&out)?;

    // Names relative to proto/, with `/` whatever the platform: what protoc expects.
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            let rel = f
                .strip_prefix(&proto_root)
                .expect("proto_files lists under proto_root");
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    let output = Command::new(&python)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("--descriptor_set_in={}", descriptors.display()))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--pyi_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .args(&names)
        .output()
        .with_context(|| format!("running {} -m grpc_tools.protoc", python.display()))?;
    if !output.status.success() {
        bail!(
            "{} -m grpc_tools.protoc failed ({}): {}\n(is grpcio-tools installed? run \
             `scripts/setup-python-sdk`)",
            python.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    let mut generated = Vec::new();
    let mut packages: Vec<String> = Vec::new();
    for name in &names {
        let stem = name.strip_suffix(".proto").expect("a .proto file");
        if let Some((dir, _)) = stem.rsplit_once('/')
            && !packages.iter().any(|p| p == dir)
        {
            packages.push(dir.to_string());
        }
        for suffix in ["_pb2.py", "_pb2.pyi", "_pb2_grpc.py"] {
            let rel = format!("{stem}{suffix}");
            let path = out.join(&rel);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("grpc_tools.protoc did not write {rel}"))?;
            generated.push(GeneratedFile {
                path: PathBuf::from(OUT_DIR).join(&rel),
                contents: package_relative(&text),
            });
        }
    }
    // `herald/v1` needs `herald/__init__.py` too; the top package is `_proto` itself.
    let mut inits: Vec<String> = vec![String::new()];
    for dir in &packages {
        let mut prefix = String::new();
        for part in dir.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !inits.contains(&prefix) {
                inits.push(prefix.clone());
            }
        }
    }
    inits.sort();
    for dir in inits {
        generated.push(GeneratedFile {
            path: PathBuf::from(OUT_DIR).join(&dir).join("__init__.py"),
            contents: "# @generated by sdk-gen (grpcio-tools stubs of proto/). Do not edit: run \
                       `cargo run -p sdk-gen`.\n"
                .to_string(),
        });
    }
    Ok(generated)
}

/// `text` with protoc's absolute module paths (`herald.v1.x_pb2`) moved under [`PACKAGE`]:
/// the `from herald… import` lines and the module name the messages are registered under.
fn package_relative(text: &str) -> String {
    text.lines()
        .map(|line| {
            if let Some(rest) = line.strip_prefix("from herald.") {
                format!("from {PACKAGE}.herald.{rest}")
            } else if line.starts_with("_builder.BuildTopDescriptorsAndMessages(") {
                line.replace(", 'herald.", &format!(", '{PACKAGE}.herald."))
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if text.ends_with('\n') { "\n" } else { "" }
}

#[cfg(test)]
mod tests {
    use super::package_relative;

    #[test]
    fn imports_move_under_the_package() {
        let text = "from herald.v1 import catalog_pb2 as _c\nfrom google.protobuf import x\n\
                    _builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'herald.v1.events_pb2', _globals)\n";
        assert_eq!(
            package_relative(text),
            "from herald_sdk._proto.herald.v1 import catalog_pb2 as _c\n\
             from google.protobuf import x\n\
             _builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'herald_sdk._proto.herald.v1.events_pb2', _globals)\n"
        );
    }
}

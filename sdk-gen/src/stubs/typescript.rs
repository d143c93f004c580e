//! The TypeScript SDK's message and service stubs (`sdks/typescript/src/gen/`), written by
//! the stock `protoc-gen-es` plugin (v2, pinned in `sdks/typescript/package.json`).
//!
//! There is no `protoc` here: protox compiles `proto/` and this module speaks the plugin
//! protocol itself, a `CodeGeneratorRequest` on the plugin's stdin and a
//! `CodeGeneratorResponse` on its stdout. The output depends only on the `.proto` files,
//! the parameter string and the plugin's pinned version, so it stays byte-for-byte stable.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, anyhow, bail};
use prost::{
    Message,
    encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint},
};
use prost_types::compiler::{CodeGeneratorRequest, CodeGeneratorResponse};

use crate::GeneratedFile;

/// Where the plugin's output goes, relative to the repository root.
pub const OUT_DIR: &str = "sdks/typescript/src/gen";
/// The plugin, relative to the repository root (installed by the setup script).
pub const PLUGIN: &str = "sdks/typescript/node_modules/.bin/protoc-gen-es";
/// Overrides [`PLUGIN`].
pub const PLUGIN_ENV: &str = "SDK_GEN_PROTOC_GEN_ES";
/// TypeScript sources with `.js` import suffixes, as Node's ESM resolution needs.
pub const PARAMETER: &str = "target=ts,import_extension=js";

/// `CodeGeneratorRequest.proto_file`.
const PROTO_FILE_FIELD: u32 = 15;

/// The stub files for the `.proto` files under `<root>/proto`, in the plugin's order.
pub fn generate(root: &Path) -> Result<Vec<GeneratedFile>> {
    let plugin = plugin(root)?;
    let request = request(&root.join("proto"))?;
    let response = run_plugin(&plugin, &request)?;
    if let Some(error) = response.error.filter(|e| !e.is_empty()) {
        bail!("{} refused the request: {error}", plugin.display());
    }
    let mut files = Vec::with_capacity(response.file.len());
    for file in response.file {
        let name = file
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| anyhow!("{} returned a file without a name", plugin.display()))?;
        if file.insertion_point.is_some_and(|p| !p.is_empty()) {
            bail!(
                "{}: insertion points are not supported ({name})",
                plugin.display()
            );
        }
        // The names come from the .proto paths; refuse anything that would escape OUT_DIR.
        if Path::new(&name)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail!("{} returned an unsafe path: {name}", plugin.display());
        }
        files.push(GeneratedFile {
            path: Path::new(OUT_DIR).join(&name),
            contents: file.content.unwrap_or_default(),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn plugin(root: &Path) -> Result<PathBuf> {
    let path = match std::env::var_os(PLUGIN_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => root.join(PLUGIN),
    };
    if !path.exists() {
        bail!(
            "protoc-gen-es is not installed at {}: run scripts/setup-typescript-sdk \
             (or point {PLUGIN_ENV} at the plugin)",
            path.display()
        );
    }
    Ok(path)
}

/// The encoded `CodeGeneratorRequest` for every `.proto` file under `proto_root`.
///
/// The files go in as protox encodes them rather than through `prost_types`, whose
/// `FileDescriptorProto` would drop the custom options (`event_info`) that protoc-gen-es
/// embeds in the generated descriptors.
fn request(proto_root: &Path) -> Result<Vec<u8>> {
    let files = crate::catalog::proto_files(proto_root)?;
    let mut compiler = protox::Compiler::new([proto_root])
        .with_context(|| format!("opening {}", proto_root.display()))?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(&files)
        .map_err(|e| match e.file() {
            Some(file) => anyhow!("{file}: {e}"),
            None => anyhow!("compiling {}: {e}", proto_root.display()),
        })?;
    let head = CodeGeneratorRequest {
        file_to_generate: compiler
            .files()
            .filter(|f| !f.is_import())
            .map(|f| f.name().to_string())
            .collect(),
        parameter: Some(PARAMETER.to_string()),
        ..CodeGeneratorRequest::default()
    };
    let mut out = head.encode_to_vec();
    // A FileDescriptorSet is `repeated FileDescriptorProto file = 1`: the same messages,
    // re-tagged as field 15, in the set's dependency order.
    let set = compiler.encode_file_descriptor_set();
    let mut buf = set.as_slice();
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).context("reading the descriptor set")?;
        if tag != 1 || wire_type != WireType::LengthDelimited {
            bail!("unexpected field {tag} in the descriptor set");
        }
        let len = usize::try_from(decode_varint(&mut buf).context("reading the descriptor set")?)?;
        if len > buf.len() {
            bail!("truncated descriptor set");
        }
        let (file, rest) = buf.split_at(len);
        encode_key(PROTO_FILE_FIELD, WireType::LengthDelimited, &mut out);
        encode_varint(len as u64, &mut out);
        out.extend_from_slice(file);
        buf = rest;
    }
    Ok(out)
}

fn run_plugin(plugin: &Path, request: &[u8]) -> Result<CodeGeneratorResponse> {
    let mut child = Command::new(plugin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} (is node on PATH?)", plugin.display()))?;
    // Written from a thread: a plugin that answers before reading all its input would
    // otherwise deadlock on a full pipe.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let request = request.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&request));
    let output = child
        .wait_with_output()
        .with_context(|| format!("running {}", plugin.display()))?;
    writer
        .join()
        .map_err(|_| anyhow!("writing to {} panicked", plugin.display()))?
        .with_context(|| format!("writing the request to {}", plugin.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            plugin.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    CodeGeneratorResponse::decode(output.stdout.as_slice())
        .with_context(|| format!("decoding the answer of {}", plugin.display()))
}

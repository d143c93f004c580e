//! Compiles Herald's `.proto` files with protox (no system `protoc`) into tonic client stubs.
//! `proto/` is a link to the repository's definitions, so the stubs always match the server
//! built from the same commit.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The link (also what `cargo package` copies), or the repository's directory where a
    // checkout did not keep symbolic links.
    let proto_root = [manifest.join("proto"), manifest.join("../../proto")]
        .into_iter()
        .find(|p| p.join("herald/v1/catalog.proto").is_file())
        .ok_or("herald/v1/*.proto not found under proto/ nor ../../proto/")?;
    let files = [
        "catalog.proto",
        "events.proto",
        "endpoints.proto",
        "deliveries.proto",
        "admin.proto",
    ]
    .map(|f| proto_root.join("herald/v1").join(f));
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(&files)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

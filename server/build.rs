//! Compiles `proto/` with protox (no system protoc needed) into tonic stubs, and writes the
//! encoded descriptor set (custom options included) for reflection and the event catalog.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = [
        "catalog.proto",
        "events.proto",
        "endpoints.proto",
        "deliveries.proto",
        "admin.proto",
    ]
    .map(|f| proto_root.join("herald/v1").join(f));
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(&files)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The dynamic encoding keeps the `event_info` extension, which prost_types would drop.
    std::fs::write(
        out_dir.join("herald_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Hand-written so that an event can be sent as bytes encoded beforehand: once for
        // all tails, and a publish's payload straight from its JSON (see src/wire/).
        .extern_path(
            ".herald.v1.SubscribeResponse",
            "crate::wire::SubscribeResponse",
        )
        .extern_path(".herald.v1.PublishResponse", "crate::wire::PublishResponse")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

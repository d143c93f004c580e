//! `cargo run -p sdk-gen -- [--check] [--root DIR]`: regenerates the generated files of
//! `sdks/` from `proto/`, or with `--check` exits with status 1 naming the files that differ.

use std::{path::PathBuf, process::ExitCode};

const USAGE: &str = "usage: sdk-gen [--check] [--root DIR]

Regenerates the generated files under DIR/sdks/ from DIR/proto/ (DIR defaults to the
repository this binary was built from). With --check nothing is written: the exit status
is 1 when a file differs, and the differing files are named.";

fn main() -> ExitCode {
    let mut check = false;
    let mut root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--root" => match args.next() {
                Some(dir) => root = dir.into(),
                None => return usage_error("--root needs a directory"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument `{other}`")),
        }
    }
    match run(&root, check) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sdk-gen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(root: &std::path::Path, check: bool) -> anyhow::Result<ExitCode> {
    let files = sdk_gen::generate(&root.join("proto"))?;
    if check {
        let stale = sdk_gen::stale(root, &files)?;
        if stale.is_empty() {
            println!("sdk-gen: {} generated files are up to date", files.len());
            return Ok(ExitCode::SUCCESS);
        }
        for path in &stale {
            eprintln!(
                "sdk-gen: {} differs from what proto/ generates",
                path.display()
            );
        }
        eprintln!("sdk-gen: run `cargo run -p sdk-gen` and commit the result");
        return Ok(ExitCode::FAILURE);
    }
    let written = sdk_gen::write(root, &files)?;
    for path in &written {
        println!("sdk-gen: wrote {}", path.display());
    }
    if written.is_empty() {
        println!(
            "sdk-gen: {} generated files were already up to date",
            files.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("sdk-gen: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

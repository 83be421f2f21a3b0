//! Compiles `proto/biomatch/v1/*.proto` with protox (no protoc) and tonic-prost-build.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let names = ["common", "embed", "ingest", "matcher", "search", "audit"];
    let files: Vec<PathBuf> = names.iter().map(|n| root.join(format!("biomatch/v1/{n}.proto"))).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("biomatch_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}

//! Generates the Milvus 1.1 gRPC types with tonic + prost, using the protoc that `protoc-bin-vendored`
//! ships so a fresh machine builds with `cargo build` alone.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("milvus_descriptor.bin"))
        .compile_with_config(
            config,
            &["../../proto/milvus.proto", "../../proto/status.proto"],
            &["../../proto"],
        )?;
    Ok(())
}

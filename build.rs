//! Generates the gRPC/protobuf code from `proto/` with the pure-Rust `protox` parser, so no
//! `protoc` is needed, and writes the file descriptor set used by server reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/celltrail/v1/events.proto",
        "proto/celltrail/v1/ledger.proto",
        "proto/celltrail/v1/admin.proto",
        "proto/celltrail/v1/station.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("celltrail_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

//! Compiles the `dlog.v1` protos (with the `protoc` that etcd-client needs
//! anyway) and writes a file descriptor set for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/dlog/v1/common.proto",
        "proto/dlog/v1/log.proto",
        "proto/dlog/v1/read.proto",
        "proto/dlog/v1/cache.proto",
        "proto/dlog/v1/admin.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .bytes(".")
        .file_descriptor_set_path(out_dir.join("dlog_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}

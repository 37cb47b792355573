//! Compiles every file of `proto/quorumca/v1` with the protoc shipped by
//! `protoc-bin-vendored`, so building needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    // Read at run time: `env!` would bake in the path of whichever checkout
    // first compiled this script, and cargo reuses the compiled script for
    // other checkouts that share a target directory.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        root.join("quorumca/v1/ca.proto"),
        root.join("quorumca/v1/cluster.proto"),
        root.join("quorumca/v1/raft.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    // The descriptor set serves gRPC reflection (grpcurl and friends).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("quorumca_descriptor.bin"))
        .compile_protos(&files, &[root])?;
    Ok(())
}

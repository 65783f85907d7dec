//! Generates the CSI v1 gRPC code from `proto/csi.proto` with the pure-Rust `protox` compiler, so building the
//! agent needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    println!("cargo:rerun-if-changed=proto/pluginregistration.proto");
    println!("cargo:rerun-if-changed=proto/provider.proto");
    let fds = protox::compile(["csi.proto", "pluginregistration.proto", "provider.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

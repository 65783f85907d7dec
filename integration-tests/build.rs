//! Generates the gRPC clients of the agent's protocols from its `.proto` files with the pure-Rust `protox`
//! compiler, so no `protoc` is needed: CSI v1 (kubelet's calls), kubelet plugin registration and the Secrets Store
//! provider protocol (the upstream driver's calls). Clients only: the servers live in the agent, and the tests talk
//! to the agent binary only through its sockets.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in ["csi.proto", "pluginregistration.proto", "provider.proto"] {
        println!("cargo:rerun-if-changed=../agent/proto/{proto}");
    }
    let fds = protox::compile(
        ["csi.proto", "pluginregistration.proto", "provider.proto"],
        ["../agent/proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}

//! Generates a CSI v1 gRPC client (for `wisp-local`, which plays kubelet) from the agent's `csi.proto` with the
//! pure-Rust `protox` compiler, so no `protoc` is needed. Client only: the server side lives in the agent.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../agent/proto/csi.proto");
    let fds = protox::compile(["csi.proto"], ["../agent/proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}

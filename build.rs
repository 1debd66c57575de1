//! Generates the ONNX protobuf types (`onnx.rs` in OUT_DIR) from `proto/onnx.proto` with protox,
//! a protobuf compiler written in Rust, so building needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors = protox::compile(["onnx.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}

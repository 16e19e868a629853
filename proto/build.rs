//! Generates the wardgate.v1 code with tonic/prost (protoc comes from `cargo xtask setup`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "common", "policy", "learning", "agent", "admin", "alerts", "enroll",
    ]
    .map(|f| format!("wardgate/v1/{f}.proto"));
    for f in &files {
        println!("cargo::rerun-if-changed={f}");
    }
    tonic_prost_build::configure().compile_protos(&files, &[".".to_string()])?;
    Ok(())
}

//! Generates the ferry.v1 messages, clients and servers from the repo's proto at build time,
//! with the protoc shipped by `protoc-bin-vendored` (no protoc needs to be installed).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from("../../proto");
    let protos = [
        "publisher.proto",
        "subscriber.proto",
        "record.proto",
        "admin.proto",
    ]
    .map(|f| proto_root.join("ferry/v1").join(f));

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // `prost::Name` impls: the type URL that finds AssignedEventIds among status details.
    config.enable_type_names();

    tonic_prost_build::configure()
        // Servers too: tests run the client against in-process fakes of them.
        .build_server(true)
        .build_transport(false)
        .compile_with_config(
            config,
            &protos,
            &[proto_root, protoc_bin_vendored::include_path()?],
        )?;
    Ok(())
}

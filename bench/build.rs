include!("../relay-ebpf/build_for_host.rs");

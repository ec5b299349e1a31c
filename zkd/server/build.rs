//! Says (`cfg(rocksdb_shared)`) whether the shared librocksdb is linked,
//! for `src/rocksdb_crc.rs`, which then defines RocksDB's CRC-32C in its
//! place. librocksdb-sys links it shared when ROCKSDB_LIB_DIR is set
//! without ROCKSDB_STATIC or ROCKSDB_COMPILE; a static RocksDB brings its
//! own definition, and a second would not link.

fn main() {
    for v in ["ROCKSDB_LIB_DIR", "ROCKSDB_STATIC", "ROCKSDB_COMPILE"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    println!("cargo:rustc-check-cfg=cfg(rocksdb_shared)");
    let compile = std::env::var("ROCKSDB_COMPILE")
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    let shared = std::env::var_os("ROCKSDB_LIB_DIR").is_some()
        && std::env::var_os("ROCKSDB_STATIC").is_none()
        && !compile;
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if shared && linux {
        println!("cargo:rustc-cfg=rocksdb_shared");
    }
}

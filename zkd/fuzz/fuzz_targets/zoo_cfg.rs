//! zoo.cfg text: parsing ends in a config or a named error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../server/src/config.rs"]
mod config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config::parse_properties(text);
        if let Err(e) = config::Config::parse(text) {
            let _ = e.to_string();
        }
    }
});

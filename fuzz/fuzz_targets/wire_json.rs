#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attache_core::fuzzing::wire_json(data));

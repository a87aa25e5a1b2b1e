#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attache_core::fuzzing::lang_patch_path(data));

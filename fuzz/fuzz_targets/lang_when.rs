#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attache::fuzzing::lang_when(data));

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| attache::fuzzing::lang_header_format(data));

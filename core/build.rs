//! Writes Envoy's protobuf descriptor set, without source comments, to `OUT_DIR`.
//!
//! The descriptor set is the one the `envoy-types` crate ships (so our descriptor pool describes
//! exactly the types that crate encodes). `SourceCodeInfo` (field 9 of each FileDescriptorProto)
//! is dropped at the wire level, which keeps the `(validate.rules)` options that a decode into
//! `prost_types` and re-encode would lose, and cuts the file from ~3.4 MB to ~0.7 MB.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let source = find_descriptor_set();
    println!("cargo:rerun-if-changed={}", source.display());
    let bytes = std::fs::read(&source).expect("read envoy-types descriptor set");
    let stripped = strip_source_info(&bytes).expect("envoy-types descriptor set is valid protobuf");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR set by cargo"));
    std::fs::write(out.join("envoy_descriptors.bin"), stripped).expect("write descriptor set");
}

/// Finds `src/generated/types.bin` of the `envoy-types` package this build uses.
fn find_descriptor_set() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").expect("TARGET set by cargo");
    // `--filter-platform` keeps cargo from wanting crates of other platforms, which an offline
    // metadata call could not fetch.
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            &target,
        ])
        .current_dir(&manifest_dir)
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("cargo metadata prints UTF-8");
    // Find `"name":"envoy-types"` ... `"manifest_path":"..."` inside the same package object.
    let mut search = text.as_str();
    while let Some(at) = search.find("\"name\":\"envoy-types\"") {
        let rest = &search[at..];
        let key = "\"manifest_path\":\"";
        if let Some(m) = rest.find(key) {
            let start = m + key.len();
            if let Some(end) = rest[start..].find('"') {
                let manifest = PathBuf::from(rest[start..start + end].replace("\\\\", "\\"));
                let candidate = manifest
                    .parent()
                    .expect("manifest has a parent directory")
                    .join("src/generated/types.bin");
                if candidate.exists() {
                    return candidate;
                }
            }
        }
        search = &search[at + 1..];
    }
    panic!("could not find envoy-types' src/generated/types.bin through cargo metadata");
}

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Walks one message's fields, calling `keep(field_number)`; returns the kept bytes and, for each
/// length-delimited field, lets `map` rewrite its payload.
/// Rewrites the payload of a length-delimited field (`None` keeps it as it is).
type MapPayload<'a> = &'a dyn Fn(u64, &[u8]) -> Option<Vec<u8>>;

fn filter_fields(b: &[u8], keep: &dyn Fn(u64) -> bool, map: MapPayload<'_>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let tag = read_varint(b, &mut i)?;
        let (field, wire) = (tag >> 3, tag & 7);
        let payload: Option<(usize, usize)> = match wire {
            0 => {
                read_varint(b, &mut i)?;
                None
            }
            1 => {
                i += 8;
                None
            }
            5 => {
                i += 4;
                None
            }
            2 => {
                let len = usize::try_from(read_varint(b, &mut i)?).ok()?;
                let p = (i, i + len);
                i += len;
                Some(p)
            }
            _ => return None,
        };
        if i > b.len() {
            return None;
        }
        if !keep(field) {
            continue;
        }
        match payload {
            Some((s, e)) => {
                let body = map(field, &b[s..e]).unwrap_or_else(|| b[s..e].to_vec());
                write_varint(tag, &mut out);
                write_varint(body.len() as u64, &mut out);
                out.extend_from_slice(&body);
            }
            None => out.extend_from_slice(&b[start..i]),
        }
    }
    Some(out)
}

fn strip_source_info(set: &[u8]) -> Option<Vec<u8>> {
    // FileDescriptorSet.file = 1; FileDescriptorProto.source_code_info = 9.
    let strip_file = |_: u64, file: &[u8]| filter_fields(file, &|f| f != 9, &|_, _| None);
    filter_fields(set, &|_| true, &|field, body| {
        if field == 1 {
            strip_file(field, body)
        } else {
            None
        }
    })
}

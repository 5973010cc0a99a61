//! The web console's assets, gzip-compressed once at build time
//! (`OUT_DIR/NAME.gz`): served as they are to a browser that accepts gzip,
//! so no request compresses anything.

use std::path::Path;

const ASSETS: [&str; 3] = ["htmx.min.js", "console.css", "favicon.svg"];

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for name in ASSETS {
        let path = Path::new("src/ui/assets").join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        let data = std::fs::read(&path).expect("a console asset");
        std::fs::write(Path::new(&out).join(format!("{name}.gz")), gzip(&data))
            .expect("write the compressed asset");
    }
}

/// RFC 1952: a header (no name, no time), the deflated data, its CRC-32 and size.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 10));
    out.extend(crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected), as gzip's trailer holds it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

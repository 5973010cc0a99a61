//! The standard library, embedded at build time from `stdlib/`.

include!(concat!(env!("OUT_DIR"), "/stdlib_files.rs"));

/// The source of a stdlib module by its import path (`std/ml` or `std/ml.eflow`).
pub fn get(path: &str) -> Option<(&'static str, &'static str)> {
    let with_ext = if path.ends_with(".eflow") {
        path.to_string()
    } else {
        format!("{path}.eflow")
    };
    FILES.iter().copied().find(|(name, _)| *name == with_ext)
}

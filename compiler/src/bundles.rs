//! A bundle from what a command is given: compiled IR files (what `eflowc compile
//! --out-dir` writes: one file per flow, each with the subflows it calls), a
//! folder of them, or `.eflow` sources and folders of them, compiled here. Shared
//! by `eflow deploy` and `eflowc diff`, so both read the same inputs the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use eflow_ir::{Bundle, Flow, IR_VERSION};

use crate::analysis::{Analysis, FsLoader, InputError, collect_eflow_files};
use crate::diagnostics::{Diagnostic, Severity};

/// What the paths given hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Given {
    /// Compiled IR files (`.json`), each a bundle: deployed together as one.
    Ir(Vec<PathBuf>),
    /// `.eflow` files and folders of them, compiled together.
    Sources(Vec<PathBuf>),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{0} holds both `.eflow` sources and `.json` IR: give the sources or the compiled files, not both"
    )]
    Mixed(String),
    #[error("no `.eflow` or `.json` files found in `{0}`")]
    Empty(String),
    #[error("{path} is not eflow IR: {message}; compile .eflow files with `eflowc compile`")]
    NotIr { path: String, message: String },
    #[error(
        "{path} is IR version {found}, this program reads version {IR_VERSION}: compile it again with a matching eflowc"
    )]
    Version { path: String, found: u64 },
    #[error(
        "flow `{name}` is in {first} at version {first_version} and in {second} at {second_version}: \
         the files were compiled from different sources; compile them together \
         (`eflowc compile DIR --out-dir OUT`) and give that folder"
    )]
    Conflict {
        name: String,
        first: String,
        first_version: String,
        second: String,
        second_version: String,
    },
    /// The sources have errors; nothing was compiled.
    #[error("{} error(s) in the sources", .0.len())]
    Diagnostics(Vec<Diagnostic>),
}

/// Whether `paths` are compiled IR or sources. A `.json` file is IR; any other
/// file is a source; a folder is a folder of sources if it holds `.eflow` files
/// (at any depth) and of IR if it holds `.json` files (directly) instead.
pub fn classify(paths: &[PathBuf]) -> Result<Given, Error> {
    let mut ir = Vec::new();
    let mut sources = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| Error::Read {
            path: p.display().to_string(),
            source,
        })?;
        if meta.is_file() {
            if is_json(p) {
                ir.push(p.clone());
            } else {
                sources.push(p.clone());
            }
            continue;
        }
        let mut eflow = Vec::new();
        let holds_sources = match collect_eflow_files(p, &mut eflow) {
            Ok(()) => true,
            Err(InputError::Empty(_)) => false,
            Err(e) => return Err(e.into()),
        };
        let json = json_files(p)?;
        match (holds_sources, json.is_empty()) {
            (true, true) => sources.push(p.clone()),
            (false, false) => ir.extend(json),
            (true, false) => return Err(Error::Mixed(p.display().to_string())),
            (false, true) => return Err(Error::Empty(p.display().to_string())),
        }
    }
    match (ir.is_empty(), sources.is_empty()) {
        (false, true) => Ok(Given::Ir(ir)),
        (true, _) => Ok(Given::Sources(sources)),
        (false, false) => Err(Error::Mixed(
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        )),
    }
}

/// The bundle `paths` make: IR files united, or sources compiled together.
pub fn load(paths: &[PathBuf]) -> Result<Bundle, Error> {
    match classify(paths)? {
        Given::Ir(files) => read_ir(&files),
        Given::Sources(paths) => compile(&paths),
    }
}

/// Sources compiled together; any error is [`Error::Diagnostics`].
pub fn compile(paths: &[PathBuf]) -> Result<Bundle, Error> {
    analyse(paths).map(|(_, bundle)| bundle)
}

/// [`compile`], with the analysis (its sources, to show places in them).
pub fn analyse(paths: &[PathBuf]) -> Result<(Analysis, Bundle), Error> {
    let analysis = Analysis::from_paths(paths, &FsLoader)?;
    let errors: Vec<Diagnostic> = analysis
        .diagnostics()
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    if !errors.is_empty() {
        return Err(Error::Diagnostics(errors));
    }
    let bundle = crate::lower::emit(&analysis, None).map_err(Error::Diagnostics)?;
    Ok((analysis, bundle))
}

/// IR files as one bundle: every flow of every file once, sorted by name. A flow
/// in several files (a subflow each file carries) must be the same version in
/// each.
pub fn read_ir(files: &[PathBuf]) -> Result<Bundle, Error> {
    let mut flows: BTreeMap<String, (String, Flow)> = BTreeMap::new();
    for path in files {
        let shown = path.display().to_string();
        let bundle = read_one(path)?;
        for f in bundle.flows {
            match flows.get(&f.name) {
                Some((first, seen)) if seen.hash != f.hash => {
                    return Err(Error::Conflict {
                        name: f.name,
                        first: first.clone(),
                        first_version: seen.hash.clone(),
                        second: shown,
                        second_version: f.hash,
                    });
                }
                Some(_) => {}
                None => {
                    flows.insert(f.name.clone(), (shown.clone(), f));
                }
            }
        }
    }
    Ok(Bundle {
        ir_version: IR_VERSION,
        flows: flows.into_values().map(|(_, f)| f).collect(),
    })
}

fn read_one(path: &Path) -> Result<Bundle, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| Error::Read {
        path: shown.clone(),
        source,
    })?;
    let not_ir = |message: String| Error::NotIr {
        path: shown.clone(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| not_ir(format!("not JSON ({e})")))?;
    match value.get("ir_version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(IR_VERSION) => {}
        Some(found) => {
            return Err(Error::Version { path: shown, found });
        }
        None => return Err(not_ir("no `ir_version`".into())),
    }
    serde_json::from_value(value).map_err(|e| not_ir(e.to_string()))
}

fn is_json(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "json")
}

/// The `.json` files directly in `dir`, sorted.
fn json_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read = |source| Error::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if is_json(&path) && path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const FLOW: &str = "remote step S(n: Int) -> Int\n\nflow F(n: Int) -> Int {\n    let s = S(n: n)\n    return s\n}\n\nflow G(n: Int) -> Int {\n    let f = F(n: n)\n    return f\n}\n\nbindings dev {\n    S = sim { duration: 1s }\n}\n";

    fn ir_folder(dir: &Path, source: &str) -> PathBuf {
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f.eflow"), source).unwrap();
        let bundle = compile(std::slice::from_ref(&src)).unwrap();
        let out = dir.join("ir");
        std::fs::create_dir_all(&out).unwrap();
        for f in &bundle.flows {
            let part = bundle.subset(&f.name);
            std::fs::write(out.join(format!("{}.json", f.name)), part.to_pretty_json()).unwrap();
        }
        out
    }

    #[test]
    fn a_folder_of_ir_files_is_one_bundle_with_each_flow_once() {
        let dir = tempfile::tempdir().unwrap();
        let out = ir_folder(dir.path(), FLOW);
        let whole = compile(&[dir.path().join("src")]).unwrap();
        assert!(
            matches!(classify(std::slice::from_ref(&out)).unwrap(), Given::Ir(f) if f.len() == 2)
        );
        assert_eq!(load(std::slice::from_ref(&out)).unwrap(), whole);
        assert_eq!(
            load(&[out.join("G.json"), out.join("F.json")]).unwrap(),
            whole
        );
        assert!(matches!(
            classify(&[dir.path().join("src")]).unwrap(),
            Given::Sources(_)
        ));
    }

    #[test]
    fn mixed_stale_and_foreign_inputs_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let out = ir_folder(dir.path(), FLOW);
        // Sources and IR together.
        let mixed = load(&[out.join("F.json"), dir.path().join("src/f.eflow")]);
        assert!(matches!(mixed, Err(Error::Mixed(_))), "{mixed:?}");
        std::fs::write(out.join("f.eflow"), FLOW).unwrap();
        assert!(matches!(
            load(std::slice::from_ref(&out)),
            Err(Error::Mixed(_))
        ));
        std::fs::remove_file(out.join("f.eflow")).unwrap();
        // Two compiles of different sources.
        let other = tempfile::tempdir().unwrap();
        let changed = ir_folder(other.path(), &FLOW.replace("1s", "2s"));
        let e = load(&[out.join("G.json"), changed.join("F.json")]).unwrap_err();
        assert!(e.to_string().contains("flow `F`"), "{e}");
        // Another IR version, and not IR at all.
        let old = dir.path().join("old.json");
        std::fs::write(&old, r#"{"ir_version": 1, "flows": []}"#).unwrap();
        assert!(matches!(load(&[old]), Err(Error::Version { found: 1, .. })));
        let junk = dir.path().join("junk.json");
        std::fs::write(&junk, "{").unwrap();
        assert!(matches!(load(&[junk]), Err(Error::NotIr { .. })));
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(load(&[empty]), Err(Error::Empty(_))));
    }
}

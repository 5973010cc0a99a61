//! The committed JSON Schema of the IR is the one its types generate.

use std::path::Path;

#[test]
fn the_committed_ir_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/ir.schema.json");
    let actual = eflow_ir::schema_json();
    if std::env::var_os("EFLOW_BLESS").is_some() {
        std::fs::write(&path, &actual)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} is stale (EFLOW_BLESS=1 cargo test -p eflow-ir to update)\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

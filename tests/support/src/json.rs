//! The `--json` documents: parsed, and validated against the schema users
//! read (docs/mzbuild.schema.json). Every test that reads a command's
//! `--json` output goes through [`document`] (or [`list`]), so every shape
//! the integration tests produce is checked against the schema.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/mzbuild.schema.json")
}

/// The compiled schema: the document, and `list --json`'s listing.
fn schemas() -> &'static (boon::Schemas, boon::SchemaIndex, boon::SchemaIndex) {
    static SCHEMAS: OnceLock<(boon::Schemas, boon::SchemaIndex, boon::SchemaIndex)> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let text = std::fs::read_to_string(schema_path()).expect("reading docs/mzbuild.schema.json");
        let schema: Value = serde_json::from_str(&text).expect("docs/mzbuild.schema.json is JSON");
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        let loc = "file:///mzbuild.schema.json";
        compiler.add_resource(loc, schema).expect("adding the schema");
        let doc = compiler.compile(loc, &mut schemas).unwrap_or_else(|e| panic!("the schema does not compile: {e:#}"));
        let list = compiler
            .compile(&format!("{loc}#/$defs/list"), &mut schemas)
            .unwrap_or_else(|e| panic!("the schema's list does not compile: {e:#}"));
        (schemas, doc, list)
    })
}

/// Parse `stdout`, the whole of a `COMMAND --json` run's output, and check
/// it: one JSON document, valid against the schema, of `command`. Returns it.
#[track_caller]
pub fn document(stdout: &str, command: &str) -> Value {
    let v: Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("`{command} --json` did not print one JSON document ({e}):\n{stdout}"));
    let (schemas, doc, _) = schemas();
    if let Err(e) = schemas.validate(&v, *doc) {
        panic!("`{command} --json` does not validate against docs/mzbuild.schema.json:\n{e:#}\n{stdout}");
    }
    assert_eq!(v["command"], command, "{stdout}");
    v
}

/// The rows of [`document`].
#[track_caller]
pub fn rows(stdout: &str, command: &str) -> Vec<Value> {
    document(stdout, command)["rows"].as_array().expect("rows").clone()
}

/// `run.result` of [`document`].
#[track_caller]
pub fn result(stdout: &str, command: &str) -> String {
    document(stdout, command)["run"]["result"].as_str().expect("run.result").to_string()
}

/// `list --json`'s listing, checked against the schema's `list`.
#[track_caller]
pub fn list(stdout: &str) -> Value {
    let v: Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("`list --json` did not print JSON ({e}):\n{stdout}"));
    let (schemas, _, list) = schemas();
    if let Err(e) = schemas.validate(&v, *list) {
        panic!("`list --json` does not validate against docs/mzbuild.schema.json's list:\n{e:#}\n{stdout}");
    }
    v
}

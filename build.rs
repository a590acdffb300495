//! Rebuilds the crate when a migration is added or changed (`sqlx::migrate!` embeds the
//! migrations at compile time, and cargo does not otherwise look at that directory), and turns
//! `docs/openapi.yaml` into the JSON the node serves at `/openapi.json`: a document that does not
//! parse fails the build, never a request.
use std::{env, fs, path::Path};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=docs/openapi.yaml");
    let yaml = fs::read_to_string("docs/openapi.yaml")?;
    let doc: serde_json::Value = serde_norway::from_str(&yaml).map_err(|e| format!("docs/openapi.yaml: {e}"))?;
    let out = Path::new(&env::var("OUT_DIR")?).join("openapi.json");
    fs::write(out, serde_json::to_string(&doc)?)?;
    Ok(())
}

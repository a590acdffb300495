//! The JavaScript client (clients/js, `@natter/client`): its JSDoc types check under `tsc
//! --strict`, its published declarations (types/) are the ones the sources give and type an app's
//! code (test/usage.ts), and its own tests (Node's test runner) pass against real nodes of this
//! build, a server restart among them.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients").join("js")
}

/// Runs `cmd` in the package, bounded.
fn run(what: &str, cmd: &mut Command, within: Duration) {
    common::run_tool(what, cmd.current_dir(package()), within);
}

/// TypeScript is the package's one dev dependency (pinned in package-lock.json).
fn typescript() {
    if !package().join("node_modules/.bin/tsc").exists() {
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
        run("npm ci", &mut npm, Duration::from_secs(300));
    }
}

#[test]
fn the_client_library_type_checks_and_its_declarations_are_current() {
    typescript();
    run("tsc --checkJs", Command::new("node_modules/.bin/tsc").args(["-p", "tsconfig.json"]), Duration::from_secs(120));
    // An app's view of the declarations: test/usage.ts compiles, and its expected errors occur.
    let mut usage = Command::new("node_modules/.bin/tsc");
    run("tsc test/usage.ts", usage.args(["-p", "tsconfig.usage.json"]), Duration::from_secs(120));
    let out = tempfile::tempdir().unwrap();
    let mut emit = Command::new("node_modules/.bin/tsc");
    emit.args(["-p", "tsconfig.json", "--noEmit", "false", "--outDir"]).arg(out.path());
    run("tsc --declaration", &mut emit, Duration::from_secs(120));
    let committed = package().join("types");
    let mut names: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    let mut have: Vec<_> = std::fs::read_dir(&committed).unwrap().map(|e| e.unwrap().file_name()).collect();
    have.sort();
    assert_eq!(names, have, "clients/js/types/ holds other files than the sources declare");
    for name in names {
        let fresh = std::fs::read_to_string(out.path().join(&name)).unwrap();
        let kept = std::fs::read_to_string(committed.join(&name)).unwrap();
        assert!(fresh == kept, "clients/js/types/{name:?} is stale: run `npm run types` in clients/js");
    }
}

#[test]
fn the_client_library_passes_its_tests_against_a_real_node() {
    let mut node = Command::new("node");
    node.args(["--experimental-websocket", "--test", "--test-reporter=spec"]);
    let mut tests: Vec<_> = std::fs::read_dir(package().join("test"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.js"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty());
    node.args(&tests).env("NATTER_BIN", env!("CARGO_BIN_EXE_natter"));
    run("node --test clients/js/test", &mut node, Duration::from_secs(300));
}

//! The module structure holds: no file of `src/` reaches, through its `use` trees and `crate::` /
//! `super::` paths, a file that reaches it back. A new import cycle fails here, naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file with its module path (`src/ws/mod.rs` is `ws`).
fn modules() -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("main.rs") {
                continue;
            }
            let rel = path.strip_prefix(src()).unwrap();
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            let file = parts.pop().unwrap();
            match file.as_str() {
                "lib.rs" | "mod.rs" => {}
                other => parts.push(other.trim_end_matches(".rs").to_string()),
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The code of a file without its unit tests (they sit at the end, after `#[cfg(test)]`), and
/// without comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Expands a `use` tree (`crate::{a::b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<Vec<String>> {
    fn parse(s: &[char], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        let mut word = String::new();
        while *i < s.len() {
            let c = s[*i];
            match c {
                '{' => {
                    *i += 1;
                    if !word.is_empty() {
                        path.push(std::mem::take(&mut word));
                    }
                    loop {
                        parse(s, i, path.clone(), out);
                        if *i < s.len() && s[*i] == ',' {
                            *i += 1;
                            // A trailing comma closes the group.
                            if *i < s.len() && s[*i] == '}' {
                                break;
                            }
                            continue;
                        }
                        break;
                    }
                    if *i < s.len() && s[*i] == '}' {
                        *i += 1;
                    }
                    return;
                }
                '}' | ',' => break,
                ':' => {
                    if !word.is_empty() {
                        path.push(std::mem::take(&mut word));
                    }
                    *i += 1;
                }
                c if c.is_alphanumeric() || c == '_' => {
                    word.push(c);
                    *i += 1;
                }
                ' ' => {
                    // `x as y`: the rest names the alias, not a path.
                    if !word.is_empty() {
                        path.push(std::mem::take(&mut word));
                    }
                    while *i < s.len() && !matches!(s[*i], ',' | '}') {
                        *i += 1;
                    }
                    out.push(path);
                    return;
                }
                _ => *i += 1,
            }
        }
        if !word.is_empty() {
            path.push(word);
        }
        out.push(path);
    }
    let chars: Vec<char> = tree.chars().filter(|c| !c.is_whitespace() || *c == ' ').collect();
    let squeezed: String = chars.iter().collect::<String>().split_whitespace().collect::<Vec<_>>().join(" ");
    let squeezed = squeezed.replace(" as ", "\u{1}").replace(' ', "").replace('\u{1}', " as ");
    let chars: Vec<char> = squeezed.chars().collect();
    let mut out = Vec::new();
    parse(&chars, &mut 0, Vec::new(), &mut out);
    out
}

/// Every path a file names: its `use` trees and inline `crate::…` / `super::…` paths.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for stmt in code.split(';') {
        let trimmed = stmt.trim_start();
        let body = trimmed.strip_prefix("pub use ").or_else(|| trimmed.strip_prefix("use "));
        if let Some(body) = body {
            out.extend(expand(body));
        }
    }
    for root in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(root) {
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
            let path: Vec<String> = tail[..end].split("::").filter(|p| !p.is_empty()).map(str::to_string).collect();
            out.push(path);
            rest = &rest[at + root.len()..];
        }
    }
    out
}

/// The file a path lands in: the longest prefix that is a module.
fn resolve(module: &[String], path: &[String], files: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    let mut full: Vec<String> = match path.first().map(String::as_str) {
        Some("crate") => path[1..].to_vec(),
        Some("super") => {
            let mut base = module.to_vec();
            let mut rest = path;
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            base
        }
        Some("self") => module.iter().chain(path[1..].iter()).cloned().collect(),
        _ => return None,
    };
    while !full.is_empty() {
        if files.contains_key(&full) {
            return Some(full);
        }
        full.pop();
    }
    None
}

fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = modules();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, path) in &files {
        let targets = edges.entry(module.clone()).or_default();
        for named in paths(&code(path)) {
            if let Some(target) = resolve(module, &named, &files)
                && &target != module
                && !target.is_empty()
            {
                targets.insert(target);
            }
        }
    }
    edges
}

fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    // Tarjan's strongly connected components; every component of two or more files is a cycle.
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        next: usize,
        found: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.edges.get(v) {
            for w in targets {
                let Some((w, _)) = s.edges.get_key_value(w) else { continue };
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn use_trees_expand_into_every_path_they_name() {
    let got = expand("crate::{a::b, c::{d, e as f,}, g,\n}");
    let want: Vec<Vec<String>> =
        [vec!["crate", "a", "b"], vec!["crate", "c", "d"], vec!["crate", "c", "e"], vec!["crate", "g"]]
            .iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect())
            .collect();
    assert_eq!(got, want);
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let m = |s: &str| vec![s.to_string()];
    let mut edges = BTreeMap::new();
    edges.insert(m("a"), BTreeSet::from([m("b")]));
    edges.insert(m("b"), BTreeSet::from([m("c")]));
    edges.insert(m("c"), BTreeSet::from([m("a")]));
    edges.insert(m("d"), BTreeSet::from([m("a")]));
    assert_eq!(cycles(&edges).len(), 1);
}

#[test]
fn no_module_of_src_imports_one_that_imports_it_back() {
    let edges = graph();
    assert!(edges.len() > 40, "the graph read {} files", edges.len());
    let hub_router = vec!["hub".to_string(), "router".to_string()];
    assert!(edges[&hub_router].contains(&vec!["hub".to_string(), "registry".to_string()]), "edges are read");
    let found = cycles(&edges);
    let shown: Vec<String> = found
        .iter()
        .map(|c| {
            c.iter().map(|m| if m.is_empty() { "lib".into() } else { m.join("::") }).collect::<Vec<_>>().join(" <-> ")
        })
        .collect();
    assert!(found.is_empty(), "import cycles among src/ modules:\n{}", shown.join("\n"));
}

#[test]
fn the_session_type_stays_above_the_hub() {
    let edges = graph();
    let session = vec!["ws".to_string(), "session".to_string()];
    for (module, targets) in &edges {
        if module.first().map(String::as_str) != Some("ws") {
            assert!(!targets.contains(&session), "{} imports the WebSocket session", module.join("::"));
        }
    }
}

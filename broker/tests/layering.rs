//! The broker's modules form layers: a module never imports from a layer above it, so the
//! graph of `crate::<module>` references between its top-level modules has no cycle. The
//! composition roots (`lib.rs`, `main.rs`) may use every module; tests inside a module may too.
//! This test reads the sources and fails naming the modules of any cycle it finds, with the
//! files that make each edge.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level module name -> the source files that make it up.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in fs::read_dir(src).expect("broker/src is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            let files = out.entry(name).or_default();
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            out.entry(name).or_default().push(path);
        }
    }
    out
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("a module directory is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            files.push(path);
        }
    }
}

/// The modules `text` refers to as `crate::<name>`, outside comments and outside its
/// `#[cfg(test)] mod tests` block (which, by convention here, closes the file).
fn references(text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if known.contains(&name) {
                out.insert(name);
            }
        }
    }
    out
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        for next in &w.edges[v] {
            let next = next.as_str();
            if !w.index.contains_key(next) {
                visit(w, next);
                let l = w.low[v].min(w.low[next]);
                w.low.insert(v, l);
            } else if w.stack.contains(&next) {
                let l = w.low[v].min(w.index[next]);
                w.low.insert(v, l);
            }
        }
        if w.low[v] == w.index[v] {
            let mut component = Vec::new();
            while let Some(top) = w.stack.pop() {
                component.push(top.to_string());
                if top == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                w.found.push(component);
            }
        }
    }
    let mut w = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.found
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    assert!(
        known.contains("config") && known.contains("router") && known.len() > 10,
        "the module list was read: {known:?}"
    );
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut made_by: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (module, files) in &modules {
        let out = edges.entry(module.clone()).or_default();
        for file in files {
            let text = fs::read_to_string(file).expect("a source file is readable");
            for target in references(&text, &known) {
                if &target != module {
                    out.insert(target.clone());
                    made_by
                        .entry((module.clone(), target))
                        .or_default()
                        .insert(file.strip_prefix(&src).unwrap().display().to_string());
                }
            }
        }
    }
    let found = cycles(&edges);
    let explain: Vec<String> = found
        .iter()
        .map(|component| {
            let mut lines = vec![format!("cycle among {component:?}:")];
            for from in component {
                for to in &edges[from] {
                    if component.contains(to) {
                        let files = &made_by[&(from.clone(), to.clone())];
                        lines.push(format!("  {from} -> {to} (in {files:?})"));
                    }
                }
            }
            lines.join("\n")
        })
        .collect();
    assert!(found.is_empty(), "{}", explain.join("\n"));
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_only_that() {
    let edge = |pairs: &[(&str, &str)]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            m.entry(a.to_string()).or_default().insert(b.to_string());
            m.entry(b.to_string()).or_default();
        }
        m
    };
    let with_cycle = edge(&[("api", "config"), ("config", "api"), ("api", "terminal")]);
    assert_eq!(
        cycles(&with_cycle),
        vec![vec!["api".to_string(), "config".to_string()]]
    );
    let layered = edge(&[
        ("api", "config"),
        ("config", "terminal"),
        ("api", "terminal"),
    ]);
    assert!(cycles(&layered).is_empty());
    let known: BTreeSet<String> = ["config", "router"].iter().map(|s| s.to_string()).collect();
    let text = "use crate::config::Config;\n// crate::router in a comment\n\
                #[cfg(test)]\nmod tests {\n use crate::router::Router;\n}\n";
    assert_eq!(
        references(text, &known),
        BTreeSet::from(["config".to_string()])
    );
}

//! The layers point down (issue 14; `docs/architecture.md`): every `crate::<module>` path in the
//! library's code — not in comments, doc comments or string literals — names a module the file's
//! own module may use:
//!
//! ```text
//! data ─→ augment ─→ models ─→ methods ─→ train ─→ eval ─→ viz ─→ (cli, homework, prelude, experiments)
//!   └── foundations: error, files, device, check, losses, momentum, progress, distributed ──┘
//! ```
//!
//! A layer uses the layers to its left and the foundations; a foundation uses only foundations
//! (without cycles); `cli`, `homework`, `prelude` and `experiments` sit on top (without cycles). A failure
//! names the file, the line and the arrow that points the wrong way. A new top-level module
//! fails until it is placed in [`RANKS`] (and in the architecture page).
//!
//! Only the text is read, so this needs no build of the crate and runs in milliseconds.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module of the library and its place: foundations 0, then the layers from
/// left to right, then the modules above every layer.
const RANKS: [(&str, usize); 19] = [
    ("error", 0),
    ("files", 0),
    ("device", 0),
    ("check", 0),
    ("losses", 0),
    ("momentum", 0),
    ("progress", 0),
    ("distributed", 0),
    ("data", 1),
    ("augment", 2),
    ("models", 3),
    ("methods", 4),
    ("train", 5),
    ("eval", 6),
    ("viz", 7),
    ("cli", 8),
    ("homework", 8),
    ("prelude", 8),
    ("experiments", 8),
];

const FOUNDATION: usize = 0;
const TOP: usize = 8;

fn rank(module: &str) -> Option<usize> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// Whether code in `from` may name `to`.
fn allowed(from: &str, to: &str) -> bool {
    match (rank(from), rank(to)) {
        _ if from == to => true,
        (Some(f), Some(t)) => t < f || (t == f && (f == FOUNDATION || f == TOP)),
        _ => false,
    }
}

/// One `crate::<module>` path in code: its line (1-based) and the module it names.
#[derive(Debug, Clone, PartialEq)]
struct Use {
    line: usize,
    module: String,
}

/// The `crate::<module>` paths of Rust source `text`, outside comments and string and char
/// literals; `crate::{a, b::c}` names `a` and `b`.
fn crate_paths(text: &str) -> Vec<Use> {
    let code = code_only(text);
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = code[i..].find("crate::") {
        let start = i + at;
        i = start + "crate::".len();
        // `$crate::` (in a macro) is the same crate; `my_crate::` is not `crate::`.
        let before = start.checked_sub(1).map(|b| bytes[b]);
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        if code[i..].starts_with('{') {
            let end = matching_brace(&code[i..]).map_or(code.len(), |e| i + e);
            for module in top_level_names(&code[i + 1..end.saturating_sub(1).max(i + 1)]) {
                found.push(Use { line, module });
            }
        } else {
            let name: String = code[i..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.push(Use { line, module: name });
            }
        }
    }
    found
}

/// `text` with comments and the insides of string and char literals blanked (newlines kept, so
/// line numbers stay).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&chars, i) {
            // r"…" or r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            let close: Vec<char> = close.chars().collect();
            out.extend(std::iter::repeat_n(' ', j + 1 - i));
            i = j + 1;
            while i < chars.len() && !chars[i..].starts_with(&close) {
                out.push(blank(chars[i]));
                i += 1;
            }
            out.extend(std::iter::repeat_n(' ', close.len().min(chars.len() - i)));
            i += close.len();
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}', '"') is blanked; a lifetime ('a) is kept.
            let close = if next == Some('\\') {
                (i + 3..chars.len().min(i + 12)).find(|&j| chars[j] == '\'')
            } else {
                (chars.get(i + 2) == Some(&'\'')).then_some(i + 2)
            };
            match close {
                Some(end) => {
                    out.extend(std::iter::repeat_n(' ', end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// The byte index just past the `}` that closes the `{` at the start of `s`.
fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The first path segment of each comma-separated item of a `{…}` group, at its top level.
fn top_level_names(group: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    for c in group.chars().chain(std::iter::once(',')) {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                let name: String =
                    item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != "self" {
                    names.push(name);
                }
                item.clear();
                continue;
            }
            _ => {}
        }
        if depth == 0 {
            item.push(c);
        }
    }
    names
}

/// The library's source files with their top-level module (`src/train/engine.rs` → `train`),
/// leaving out the crate root and the binaries.
fn library_files() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if path != src.join("bin") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") && path != src.join("lib.rs") {
                let rel = path.strip_prefix(&src).expect("under src/");
                let first = rel.components().next().expect("a path").as_os_str().to_string_lossy();
                files.push((path.clone(), first.trim_end_matches(".rs").to_string()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_import_points_down_the_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut wrong = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut seen = 0;
    for (path, module) in library_files() {
        let shown = path.strip_prefix(root).unwrap_or(&path).display().to_string();
        if rank(&module).is_none() {
            wrong.push(format!(
                "{shown}: the module `{module}` has no place in the layers; add it to RANKS in tests/layers.rs and to \
                 docs/architecture.md"
            ));
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a readable source file");
        for u in crate_paths(&text) {
            seen += 1;
            if rank(&u.module).is_none() {
                continue; // a crate-root item (`crate::Error`, `crate::Result`), not a module
            }
            if u.module != module {
                graph.entry(module.clone()).or_default().insert(u.module.clone());
            }
            if !allowed(&module, &u.module) {
                wrong.push(format!(
                    "{shown}:{}: `{module}` imports `{}` (crate::{}), which is above it; {module} may use {}",
                    u.line,
                    u.module,
                    u.module,
                    may_use(&module)
                ));
            }
        }
    }
    assert!(seen > 100, "only {seen} crate:: paths found in src/: is the scanner broken?");
    // Foundations may use each other, but not in a circle.
    if let Some(cycle) = find_cycle(&graph) {
        wrong.push(format!("import cycle between modules: {}", cycle.join(" → ")));
    }
    assert!(wrong.is_empty(), "the layering is broken (docs/architecture.md):\n{}", wrong.join("\n"));
}

fn may_use(module: &str) -> String {
    let r = rank(module).unwrap_or(0);
    let names: Vec<&str> = RANKS.iter().filter(|(m, _)| *m != module && allowed(module, m)).map(|(m, _)| *m).collect();
    if r == FOUNDATION && names.iter().all(|m| rank(m) == Some(FOUNDATION)) {
        format!("only foundations ({})", names.join(", "))
    } else {
        names.join(", ")
    }
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_scanner_reads_code_and_skips_comments_and_strings() {
    let text = r##"//! See [`crate::viz::Figure`].
use crate::error::{Error, Result};
use crate::{data::ImageSet, viz::{self, Figure}};
/// A doc link to [`crate::eval`] is no import.
fn f() -> String {
    let s = "crate::viz in a string"; // and crate::train in a comment
    let r = r#"crate::eval"#;
    let c = '"';
    /* crate::viz in a block comment */
    let t: &'static str = "x";
    format!("{}", crate::train::stop_requested())
}
macro_rules! m { () => { $crate::error::Error::Data(String::new()) } }
"##;
    let found: Vec<(usize, String)> = crate_paths(text).into_iter().map(|u| (u.line, u.module)).collect();
    assert_eq!(
        found,
        vec![
            (2, "error".to_string()),
            (3, "data".to_string()),
            (3, "viz".to_string()),
            (11, "train".to_string()),
            (13, "error".to_string()),
        ]
    );
}

#[test]
fn the_rules_match_the_architecture_page() {
    assert!(allowed("viz", "eval") && allowed("eval", "train") && allowed("train", "data"));
    assert!(!allowed("data", "viz") && !allowed("train", "eval") && !allowed("eval", "viz"));
    assert!(allowed("data", "error") && allowed("device", "error") && !allowed("device", "train"));
    assert!(!allowed("files", "train") && allowed("homework", "methods") && !allowed("methods", "homework"));
    assert!(!allowed("data", "nonexistent"));
    let mut g = BTreeMap::new();
    g.insert("files".to_string(), BTreeSet::from(["error".to_string()]));
    g.insert("error".to_string(), BTreeSet::from(["files".to_string()]));
    assert_eq!(find_cycle(&g), Some(vec!["error".into(), "files".into(), "error".into()]));
}

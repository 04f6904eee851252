//! The architecture, checked: the layers of `src/lib.rs` (imports point
//! down only), no import cycle between modules, and the size limits (no
//! function over 80 lines, no source file over 600 lines outside its test
//! modules).
//!
//! Every `src/**/*.rs` file is parsed with `syn`; every path that starts with
//! `crate::`, `super::` or `self::` (in `use` items and in code) is resolved
//! to the module it names. Test modules (`#[cfg(test)]`, `tests.rs`) are left
//! out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

/// Top-level modules by layer, lowest first, as `src/lib.rs` draws them. A module may name modules of a
/// lower layer, and modules of its own layer as long as no cycle forms;
/// `agent` and `watch` (the two programs) never name each other.
const LAYERS: &[&[&str]] = &[
    &["wire", "sqlite", "systemd", "tls", "service"],
    &["config"],
    &["outbox", "telemetry", "mqtt", "cli"],
    &["agent", "watch"],
];

/// Pairs inside a program that must stay apart although they share a layer:
/// (lower, higher): the lower one never names the higher one.
const APART: &[(&str, &str)] = &[
    // A hardware library: it returns its own errors, `checks` maps them.
    ("agent::probes", "agent::checks"),
    ("agent::probes", "agent::config"),
    ("agent::probes", "agent::run"),
    ("agent::checks", "agent::run"),
    ("agent::sources", "agent::run"),
    ("agent::config", "agent::run"),
    ("watch::alerts", "watch::run"),
    ("watch::config", "watch::run"),
    ("watch::ingest", "watch::run"),
];

const MAX_FN_LINES: usize = 80;
const MAX_FILE_LINES: usize = 600;

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&top))
}

struct SourceFile {
    path: PathBuf,
    /// `agent::checks::http` for `src/agent/checks/http.rs`.
    module: Vec<String>,
    syntax: syn::File,
    text: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The library's files, without `src/bin/` (the binaries are the top layer)
/// and without test-only files.
fn library_files() -> Vec<SourceFile> {
    let src = src_dir();
    let mut paths = Vec::new();
    walk(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).expect("under src").to_path_buf();
            if rel.starts_with("bin") {
                return None;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            let syntax = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("{}: does not parse: {e}", path.display()));
            Some(SourceFile {
                module: module_of(&rel),
                path,
                syntax,
                text,
            })
        })
        .collect()
}

fn is_test_file(file: &SourceFile) -> bool {
    file.module.last().is_some_and(|m| m == "tests")
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// Collects the modules a file names, outside its test modules.
struct Imports<'a> {
    module: &'a [String],
    /// Inline `mod x { … }` nesting inside the file.
    inline: Vec<String>,
    found: BTreeSet<(Vec<String>, usize)>,
}

impl Imports<'_> {
    fn here(&self) -> Vec<String> {
        let mut m = self.module.to_vec();
        m.extend(self.inline.iter().cloned());
        m
    }

    /// Resolves a path's leading segments to an absolute module path.
    fn resolve(&self, segments: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "super" | "self" => self.here(),
            _ => return None,
        };
        let mut rest = segments;
        while let Some(s) = rest.first() {
            match s.as_str() {
                "crate" => {}
                "self" => {}
                "super" => {
                    base.pop()?;
                }
                _ => break,
            }
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn record(&mut self, segments: &[String], line: usize) {
        if let Some(target) = self.resolve(segments) {
            self.found.insert((target, line));
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.record(prefix, n.ident.span().start().line);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.record(prefix, r.ident.span().start().line);
                prefix.pop();
            }
            syn::UseTree::Glob(g) => self.record(prefix, g.star_token.span().start().line),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Imports<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_cfg_test(&m.attrs) {
            return;
        }
        if m.content.is_some() {
            self.inline.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.inline.pop();
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if !is_cfg_test(&i.attrs) {
            syn::visit::visit_item_impl(self, i);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if !is_cfg_test(&u.attrs) {
            self.use_tree(&mut Vec::new(), &u.tree);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(&segments, p.span().start().line);
        syn::visit::visit_path(self, p);
    }
}

/// Every (from module, to module, line) edge of the library, outside tests.
fn edges(files: &[SourceFile]) -> Vec<(String, PathBuf, usize, Vec<String>)> {
    let mut out = Vec::new();
    for file in files.iter().filter(|f| !is_test_file(f)) {
        let mut v = Imports {
            module: &file.module,
            inline: Vec::new(),
            found: BTreeSet::new(),
        };
        v.visit_file(&file.syntax);
        for (target, line) in v.found {
            out.push((file.module.join("::"), file.path.clone(), line, target));
        }
    }
    out
}

/// `a::b::c` → the first `depth` segments joined.
fn prefix(path: &[String], depth: usize) -> String {
    path.iter()
        .take(depth)
        .cloned()
        .collect::<Vec<_>>()
        .join("::")
}

fn starts_with(module: &str, prefix: &str) -> bool {
    module == prefix || module.starts_with(&format!("{prefix}::"))
}

/// The upward imports: a lower layer naming a higher one, one program naming
/// the other, or a pair of `APART` crossed.
fn upward_imports(files: &[SourceFile]) -> Vec<String> {
    let mut bad = Vec::new();
    for (from, path, line, target) in edges(files) {
        let from_top = from.split("::").next().unwrap_or_default().to_string();
        let Some(to_top) = target.first() else {
            continue;
        };
        let to = target.join("::");
        let what = format!("{}:{line}: `{from}` names `{to}`", path.display());
        match (layer_of(&from_top), layer_of(to_top)) {
            (Some(f), Some(t)) if t > f => {
                bad.push(format!("{what}: layer {t} is above layer {f}"))
            }
            (Some(3), Some(3)) if from_top != *to_top => {
                bad.push(format!("{what}: the two programs never name each other"))
            }
            _ => {}
        }
        for (lower, higher) in APART {
            if starts_with(&from, lower) && starts_with(&to, higher) {
                bad.push(format!("{what}: `{lower}` never names `{higher}`"));
            }
        }
    }
    bad
}

/// Cycles between modules, at the depth of a program's parts
/// (`agent::checks`, `watch::alerts`) and of the top-level modules.
fn cycles(files: &[SourceFile], depth: usize) -> Vec<String> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let known: BTreeSet<String> = files
        .iter()
        .filter(|f| f.module.len() >= depth.min(f.module.len()))
        .map(|f| prefix(&f.module, depth))
        .collect();
    for (from, _, _, target) in edges(files) {
        let from_parts: Vec<String> = from.split("::").map(String::from).collect();
        let a = prefix(&from_parts, depth);
        let mut b = prefix(&target, depth);
        // An item of a module (`agent::checks::Code`) counts as its module.
        while !known.contains(&b) && b.contains("::") {
            b.truncate(b.rfind("::").unwrap_or(0));
        }
        if a != b && known.contains(&b) && !starts_with(&a, &b) && !starts_with(&b, &a) {
            graph.entry(a).or_default().insert(b);
        }
    }
    let mut found = Vec::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, trail)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut cycle = trail.clone();
                    cycle.push(start.clone());
                    // Report each cycle once, from its smallest member.
                    if trail.iter().all(|m| m >= start) {
                        found.push(cycle.join(" -> "));
                    }
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    found
}

/// Lines of a file outside its `#[cfg(test)]` items.
fn lines_outside_tests(file: &SourceFile) -> usize {
    let total = file.text.lines().count();
    let test_lines: usize = file
        .syntax
        .items
        .iter()
        .filter(|item| match item {
            syn::Item::Mod(m) => is_cfg_test(&m.attrs),
            syn::Item::Fn(f) => is_cfg_test(&f.attrs),
            syn::Item::Impl(i) => is_cfg_test(&i.attrs),
            _ => false,
        })
        .map(|item| item.span().end().line - item.span().start().line + 1)
        .sum();
    total - test_lines
}

/// Functions longer than the limit, outside tests.
struct LongFns {
    file: PathBuf,
    long: Vec<String>,
}

impl LongFns {
    fn check(&mut self, name: &syn::Ident, sig: &syn::Signature, block: &syn::Block) {
        let lines = block.span().end().line - sig.fn_token.span().start().line + 1;
        if lines > MAX_FN_LINES {
            self.long.push(format!(
                "{}:{}: fn {name} is {lines} lines (at most {MAX_FN_LINES})",
                self.file.display(),
                sig.fn_token.span().start().line
            ));
        }
    }
}

impl<'ast> Visit<'ast> for LongFns {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_cfg_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if is_cfg_test(&f.attrs) {
            return;
        }
        self.check(&f.sig.ident, &f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.check(&f.sig.ident, &f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.check(&f.sig.ident, &f.sig, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

fn all_files_with_bins() -> Vec<(PathBuf, syn::File, String)> {
    let mut paths = Vec::new();
    walk(&src_dir(), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read source");
            let syntax = syn::parse_file(&text).expect("parses");
            (p, syntax, text)
        })
        .collect()
}

#[test]
fn imports_point_down_the_layers() {
    let bad = upward_imports(&library_files());
    assert!(
        bad.is_empty(),
        "imports pointing up the layers (see src/lib.rs):\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_import_cycle_between_modules() {
    let files = library_files();
    let mut found = cycles(&files, 1);
    found.extend(cycles(&files, 2));
    assert!(
        found.is_empty(),
        "import cycles between modules:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_function_over_80_lines() {
    let mut long = Vec::new();
    for (path, syntax, _) in all_files_with_bins() {
        if path.file_stem().is_some_and(|s| s == "tests") {
            continue;
        }
        let mut v = LongFns {
            file: path,
            long: Vec::new(),
        };
        v.visit_file(&syntax);
        long.extend(v.long);
    }
    assert!(long.is_empty(), "functions too long:\n{}", long.join("\n"));
}

#[test]
fn no_source_file_over_600_lines_outside_tests() {
    let mut big = Vec::new();
    for (path, syntax, text) in all_files_with_bins() {
        if path.file_stem().is_some_and(|s| s == "tests") {
            continue;
        }
        let file = SourceFile {
            path: path.clone(),
            module: Vec::new(),
            syntax,
            text,
        };
        let lines = lines_outside_tests(&file);
        if lines > MAX_FILE_LINES {
            big.push(format!(
                "{}: {lines} lines outside tests (at most {MAX_FILE_LINES})",
                path.display()
            ));
        }
    }
    assert!(big.is_empty(), "files too long:\n{}", big.join("\n"));
}

/// The checker itself: an upward import and a cycle written into a copy of
/// two modules are both found (so the checks above can fail).
#[test]
fn the_checker_sees_an_upward_import_and_a_cycle() {
    let parse = |module: &str, text: &str| SourceFile {
        path: PathBuf::from(format!("src/{}.rs", module.replace("::", "/"))),
        module: module.split("::").map(String::from).collect(),
        syntax: syn::parse_file(text).expect("parses"),
        text: text.to_string(),
    };
    let files = vec![
        parse("config", "use crate::agent::checks::Code;"),
        parse("agent::checks", "use crate::agent::probes::gpio::Chip;"),
        parse(
            "agent::probes",
            "pub fn f() -> super::checks::Code { todo!() }",
        ),
    ];
    let bad = upward_imports(&files);
    assert!(
        bad.iter()
            .any(|b| b.contains("`config` names `agent::checks::Code`")),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|b| b.contains("`agent::probes` never names `agent::checks`")),
        "{bad:?}"
    );
    let cycles = cycles(&files, 2);
    assert!(
        cycles
            .iter()
            .any(|c| c.contains("agent::checks -> agent::probes -> agent::checks")),
        "{cycles:?}"
    );
}

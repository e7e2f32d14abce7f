//! Tidy tests: the architecture's rules, checked on the source text rather than hoped for.
//!
//! - nothing under `src/ingest/`, nor the sans-I/O files of `http/` and `storage/` (the head's
//!   parser, the response's renderer, the sequence of one request, the chunked framing, the
//!   decoder of compressed bodies, the log record's format), does I/O or reads a clock (`std::fs`, `std::net`, `SystemTime::now`, `Instant`);
//! - `service` knows nothing of HTTP; no two modules import each other, through any number of
//!   others, and `config/` imports no layer;
//! - no production file is over 800 lines, its tests in a module at its end or apart;
//! - `unsafe` appears only in `src/malloc.rs` (the compiler holds the rest: the crate denies
//!   `unsafe_code`), and code outside tests may not `unwrap` or `expect` (clippy denies it, by an
//!   attribute this test checks is there);
//! - every Rust file opens with a `//!` paragraph saying what it is;
//! - nothing in the repository cites a document it does not hold (the product's specification
//!   lives outside it: what the code needs of it is said in README.md, ARCHITECTURE.md and
//!   docs/);
//! - the Python in `scripts/` passes ruff, beside the shellcheck test of the shell scripts;
//! - every relative link of README.md, ARCHITECTURE.md and docs/*.md names a file that exists,
//!   and its `#anchor` a heading of that file.
//! - ARCHITECTURE.md's code map names every production file under `src/`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (relative to the repository) whose name ends with `ext`.
fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, ext, out);
            } else if path.to_string_lossy().ends_with(ext) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), ext, &mut out);
    out.sort();
    out
}

/// `path`, a file under `src/`, relative to `src/` (`storage/log/mod.rs`).
fn under_src(path: &Path) -> String {
    let src = root().join("src");
    path.strip_prefix(&src)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of a Rust file that are code, not comments.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

#[test]
fn the_sans_io_code_does_no_io_and_reads_no_clock() {
    let forbidden = [
        "std::fs",
        "std::net",
        "SystemTime::now",
        "Instant",
        "File::open",
    ];
    let mut found = Vec::new();
    let pure = [
        "src/http/head.rs",
        "src/http/render.rs",
        "src/http/sequence.rs",
        "src/http/chunked.rs",
        "src/http/encoding.rs",
        "src/storage/record.rs",
    ]
    .map(|f| root().join(f));
    for path in files("src/ingest", ".rs").into_iter().chain(pure) {
        let text = read(&path);
        for (n, line) in code_lines(&text) {
            for word in forbidden {
                if line.contains(word) {
                    found.push(format!("{}:{n}: {word}", path.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "src/ingest/ and the sans-I/O files must stay pure:\n{}",
        found.join("\n")
    );
}

/// Each module of `src/` (one a file: `a/b.rs` and `a/b/mod.rs` are `a::b`, `main.rs` is
/// ""), with the modules its production code names (`crate::a::b::…`, `super::…`), each the
/// longest path that is a module; a module's own ancestors are left out (what encloses it is
/// its to use). Files of tests (`*tests.rs`, what is under a `tests/` folder, and those
/// declared under `#[cfg(test)]`) are not modules here.
fn module_imports() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut texts = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    for path in files("src", ".rs") {
        let rel = under_src(&path).replace(".rs", "");
        let mut parts: Vec<&str> = rel.split('/').collect();
        if parts.last() == Some(&"mod") || parts == ["main"] {
            parts.pop();
        }
        let module = parts.join("::");
        let text = read(&path);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with("#[cfg(test)]") {
                continue;
            }
            // The item the attribute is on: the first line after it that is no attribute
            // (`#[path = …]`). Only that one: the `mod http;` after `#[cfg(test)] mod
            // doc_tables;` is production, and reading two lines on took it for a test.
            let item = lines[i + 1..].iter().find(|l| !l.starts_with("#["));
            if let Some(name) = item
                .map(|l| {
                    l.trim_start_matches("pub(crate) ")
                        .trim_start_matches("pub ")
                })
                .and_then(|l| l.strip_prefix("mod "))
                .and_then(|n| n.strip_suffix(';'))
            {
                let child = if module.is_empty() {
                    name.to_string()
                } else {
                    format!("{module}::{name}")
                };
                test_only.insert(child);
            }
        }
        // Files of tests: `tests.rs`, `*_tests.rs`, and what is under a `tests/` folder.
        if rel.split('/').any(|part| part.ends_with("tests")) {
            continue;
        }
        let production: Vec<&str> = lines[..production_lines(&text)]
            .iter()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect();
        texts.insert(module, production.join("\n"));
    }
    for module in &test_only {
        texts.remove(module);
    }
    let is_module = |path: &[&str]| texts.contains_key(&path.join("::"));
    let longest = |path: &[&str]| {
        (1..=path.len())
            .rev()
            .map(|n| &path[..n])
            .find(|p| is_module(p))
            .map(|p| p.join("::"))
    };
    let mut imports = BTreeMap::new();
    for (module, text) in &texts {
        let own: Vec<&str> = module.split("::").filter(|p| !p.is_empty()).collect();
        let mut named = BTreeSet::new();
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        for (at, _) in text
            .match_indices("crate::")
            .chain(text.match_indices("super::"))
        {
            if text[..at].ends_with(|c: char| ident(c) || c == ':') {
                continue;
            }
            let rest = &text[at..];
            let mut base: Vec<&str> = Vec::new();
            let mut tail = rest;
            if let Some(r) = tail.strip_prefix("crate::") {
                tail = r;
            } else {
                base = own.clone();
                while let Some(r) = tail.strip_prefix("super::") {
                    base.pop();
                    tail = r;
                }
            }
            let mut paths = Vec::new();
            named_paths(base, tail, &mut paths);
            for path in paths {
                if let Some(target) = longest(&path) {
                    let enclosing = own.starts_with(&target.split("::").collect::<Vec<_>>());
                    if target != *module && !enclosing {
                        named.insert(target);
                    }
                }
            }
        }
        imports.insert(module.clone(), named);
    }
    imports
}

/// The paths that `tail` (what follows `crate::` or the last `super::`) names from `base`: one
/// for a plain path (`a::b::C`), one for each member of a use tree's group (`{a::b, c::{d,
/// e}, self}` from `x` is `x::a::b`, `x::c::d`, `x::c::e` and `x`), however it is spread over
/// lines. Reading up to the `{` alone left out every module a group names: `use
/// super::{runs, states}` in `api/routes.rs`, `use crate::{StartError, config}`.
fn named_paths<'a>(base: Vec<&'a str>, tail: &'a str, out: &mut Vec<Vec<&'a str>>) {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut path = base;
    let mut rest = tail.trim_start();
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (0usize, 0);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 0 => {
                        named_paths(path.clone(), &group[start..i], out);
                        if c == '}' {
                            return;
                        }
                        start = i + 1;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            return;
        }
        let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        if &rest[..end] != "self" {
            path.push(&rest[..end]);
        }
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r.trim_start(),
            None => break,
        }
    }
    out.push(path);
}

/// No two modules import each other, through any number of others: each layer, and each
/// file within one, builds on what is below it.
#[test]
fn no_import_goes_round_in_a_circle() {
    use std::collections::{BTreeMap, BTreeSet};
    let imports = module_imports();
    assert!(imports.len() > 40, "{} modules", imports.len());
    assert!(
        imports["ingest::payload"].contains("verdict"),
        "the reading of imports misses `crate::` paths"
    );
    assert!(
        imports["delivery::deliverer"].contains("delivery::pieces"),
        "the reading of imports misses `super::` paths"
    );
    for module in ["http", "service::judging", "storage::log::waiters"] {
        assert!(
            imports.contains_key(module),
            "{module}, declared on the line after a module of tests, is production code"
        );
    }
    assert!(
        imports["api::routes"].contains("api::runs") && imports["api::routes"].contains("http"),
        "the modules a use tree's group names are read: {:?}",
        imports["api::routes"]
    );
    assert!(
        imports["check_influxdb"].contains("config"),
        "`use crate::{{StartError, config}}` names `config`"
    );
    assert!(
        !imports.keys().any(|m| m.contains("tests")),
        "files of tests are not modules here"
    );
    let group = &imports["storage::log::group"];
    assert!(
        !group.contains("storage::log") && !group.contains("storage"),
        "a module's enclosing modules are its own: {group:?}"
    );
    // Tarjan's strongly connected components: each circle is one of more than one module.
    struct Walk<'a> {
        imports: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        circles: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        for u in w.imports.get(v).into_iter().flatten() {
            let u = u.as_str();
            if !w.index.contains_key(u) {
                visit(w, u);
                let low = w.low[v].min(w.low[u]);
                w.low.insert(v, low);
            } else if w.stack.contains(&u) {
                let low = w.low[v].min(w.index[u]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let at = w.stack.iter().rposition(|m| *m == v).unwrap();
            let mut circle: Vec<&str> = w.stack.split_off(at);
            if circle.len() > 1 {
                circle.sort();
                w.circles.push(circle);
            }
        }
    }
    let mut walk = Walk {
        imports: &imports,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        circles: Vec::new(),
    };
    for module in imports.keys() {
        if !walk.index.contains_key(module.as_str()) {
            visit(&mut walk, module);
        }
    }
    assert!(
        walk.circles.is_empty(),
        "modules that import each other: {:?}",
        walk.circles
    );
}

/// The layers import their settings from `config/`, never the other way round: that is what
/// keeps `config → delivery → state → config` from being a circle.
#[test]
fn the_configuration_imports_no_layer() {
    let sources = files("src/config", "rs");
    assert!(sources.len() > 3, "src/config/ has {} files", sources.len());
    let mut found = Vec::new();
    for file in sources {
        let text = read(&file);
        for (n, l) in code_lines(&text) {
            let layers = [
                "crate::delivery",
                "crate::state",
                "crate::storage",
                "crate::http",
                "crate::api",
                "crate::service",
            ];
            if layers.iter().any(|layer| l.contains(layer)) {
                found.push(format!("{}:{n}: {l}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_run_logic_knows_nothing_of_http() {
    let mut found = Vec::new();
    let sources = files("src/service", ".rs");
    assert!(!sources.is_empty(), "src/service/ holds the use-cases");
    for path in sources {
        let text = read(&path);
        found.extend(
            code_lines(&text)
                .filter(|(_, l)| l.contains("crate::http") || l.contains("http::"))
                .map(|(n, l)| format!("{}:{n}: {l}", path.display())),
        );
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn unsafe_code_lives_in_one_module_and_unwrap_is_denied_outside_tests() {
    let mut found = Vec::new();
    for path in files("src", ".rs") {
        if path.ends_with("malloc.rs") {
            continue;
        }
        let text = read(&path);
        for (n, line) in code_lines(&text) {
            if line.contains("unsafe ") || line.contains("unsafe{") {
                found.push(format!("{}:{n}", path.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "unsafe outside src/malloc.rs:\n{}",
        found.join("\n")
    );
    let main = read(&root().join("src/main.rs"));
    assert!(
        main.contains("#![deny(unsafe_code)]"),
        "src/main.rs denies unsafe_code"
    );
    assert!(
        main.contains("#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]"),
        "src/main.rs denies unwrap and expect outside tests"
    );
}

#[test]
fn every_rust_file_opens_with_a_paragraph_on_what_it_is() {
    let mut missing = Vec::new();
    for dir in ["src", "tests", "examples"] {
        for path in files(dir, ".rs") {
            let text = read(&path);
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if !first.starts_with("//!") {
                missing.push(path.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a //! paragraph:\n{}",
        missing.join("\n")
    );
}

#[test]
fn nothing_cites_a_document_the_repository_does_not_hold() {
    // Spelled in pieces so that this file does not cite it either.
    let citation = format!("{}{}", "SPEC", " §");
    let file = format!("{}{}", "SPEC", ".md");
    let output = Command::new("git")
        .args(["ls-files", "-co", "--exclude-standard"])
        .current_dir(root())
        .output()
        .expect("git lists the repository's files");
    let mut found = Vec::new();
    for name in String::from_utf8_lossy(&output.stdout).lines() {
        let path = root().join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if line.contains(&citation) || line.contains(&file) {
                found.push(format!("{name}:{}", n + 1));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_python_in_scripts_passes_ruff() {
    let ruff = root().join("target/e2e-venv/bin/ruff");
    assert!(
        ruff.exists(),
        "{} not found: run scripts/test.sh, which makes the test virtualenv (Locust and ruff from PyPI)",
        ruff.display()
    );
    let out = Command::new(&ruff)
        .args(["check", "--no-cache", "scripts"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ruff:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The anchors GitHub gives the headings of a markdown text: the heading lower-cased, without
/// what is not a letter, a digit, a space, `-` or `_`, spaces made `-`; a repeated one gets
/// `-1`, `-2`, …. Lines inside fenced code blocks (a shell comment) are not headings.
fn anchors(markdown: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let repeats = seen.iter().filter(|s| **s == slug).count();
        seen.push(slug.clone());
        if repeats > 0 {
            seen.push(format!("{slug}-{repeats}"));
        }
    }
    seen
}

/// The targets of the markdown links of a text, `[text](target)`, outside fenced code blocks.
fn link_targets(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((n + 1, after[..end].to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_of_the_docs_resolves() {
    let mut pages = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    pages.extend(files("docs", ".md"));
    assert!(
        pages.len() > 2,
        "docs/ holds the reference pages the README links"
    );
    let mut broken = Vec::new();
    for page in &pages {
        let text = read(page);
        for (n, target) in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            let at = format!("{}:{n}: {target}", page.display());
            if !file.exists() {
                broken.push(format!("{at}: no file {}", file.display()));
                continue;
            }
            if let Some(anchor) = anchor
                && !anchors(&read(&file)).iter().any(|a| a == anchor)
            {
                broken.push(format!("{at}: no heading with that anchor"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken relative links:\n{}",
        broken.join("\n")
    );
}

/// The lines of a source file before its tests: up to its first module of tests written in
/// it (`#[cfg(test)]`, then `mod … {`), the whole file when its tests are in files of their
/// own. A `#[cfg(test)]` on anything else (a helper, a `mod doc_tables;`) ends nothing: it
/// ended the count at the first one, and three files of 816 to 1 223 lines were counted as 17
/// to 55.
fn production_lines(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .position(|pair| {
            let item = pair[1]
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            pair[0].starts_with("#[cfg(test)]") && item.starts_with("mod ") && item.ends_with('{')
        })
        .unwrap_or(lines.len())
}

/// No production file is over 800 lines (its tests, in a module at its end or in a file of
/// their own, are not counted): a file that grows past that does more than one thing.
#[test]
fn no_production_file_is_over_800_lines() {
    let early = "#[cfg(test)]\nfn helper() {}\nfn more() {}\n#[cfg(test)]\nmod tests {\n}\n";
    assert_eq!(
        production_lines(early),
        3,
        "a test helper does not end the count"
    );
    assert_eq!(production_lines("fn a() {}\n#[cfg(test)]\nmod tests;\n"), 3);
    let mut found = Vec::new();
    for path in files("src", ".rs") {
        let name = path.to_string_lossy();
        if name.ends_with("tests.rs") || name.ends_with("_tests.rs") {
            continue;
        }
        let production = production_lines(&read(&path));
        if production > 800 {
            found.push(format!("{}: {production} lines", path.display()));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The job table and its formats do no I/O: `state/jobs/` and `state/journal.rs` reach no file,
/// socket or storage (the snapshot's file is `state/snapshots.rs`'s, through `storage`).
#[test]
fn the_job_table_and_its_formats_do_no_io() {
    let forbidden = [
        "std::fs",
        "std::net",
        "File::",
        "crate::storage",
        "snapshots::",
    ];
    let mut sources: Vec<PathBuf> = files("src/state/jobs", ".rs")
        .into_iter()
        .filter(|p| !p.ends_with("tests.rs"))
        .collect();
    sources.push(root().join("src/state/journal.rs"));
    let mut found = Vec::new();
    for path in sources {
        let text = read(&path);
        // Up to the module of tests, as the count of lines reads them: up to the first
        // `#[cfg(test)]` this read 36 lines of `state/jobs/mod.rs` (one on a `pub use`) and 186
        // of `state/journal.rs` (one on a helper), about a tenth of the table's code.
        let production: String = text
            .lines()
            .take(production_lines(&text))
            .collect::<Vec<_>>()
            .join("\n");
        if path.ends_with("state/jobs/mod.rs") || path.ends_with("state/journal.rs") {
            let read = production.lines().count();
            assert!(read > 300, "{}: {read} lines read", path.display());
        }
        for (n, line) in code_lines(&production) {
            for word in forbidden {
                if line.contains(word) {
                    found.push(format!("{}:{n}: {word}", path.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Whether `rel` (a file's path under `src/`) is in one of ARCHITECTURE.md's tables: named by
/// that path, or, in the row of a file of its folder or of the module the folder belongs to
/// (`service/write.rs` for `service/write/targets.rs`), by its name or its path from there.
fn mapped(rel: &str, rows: &[&str]) -> bool {
    let quoted = |s: &str| format!("`{s}`");
    if rows.iter().any(|r| r.contains(&quoted(rel))) {
        return true;
    }
    let Some((folder, name)) = rel.rsplit_once('/') else {
        return false;
    };
    let short = match folder.rsplit_once('/') {
        Some((_, last)) => format!("{last}/{name}"),
        None => format!("{folder}/{name}"),
    };
    rows.iter().any(|r| {
        (r.contains(&quoted(name)) || r.contains(&quoted(&short)))
            && r.contains(&format!("`{folder}"))
    })
}

/// ARCHITECTURE.md's code map shows the layout: every production file under `src/` has its
/// row (its tests, `tests.rs`, `*_tests.rs` and what is under a `tests/` folder, are the
/// convention the map states once). `state/jobs/read.rs`, `state/jobs/sample.rs`,
/// `ingest/mod.rs` and `state/mod.rs` were in none.
#[test]
fn every_source_file_is_in_the_code_map() {
    let map = read(&root().join("ARCHITECTURE.md"));
    let rows: Vec<&str> = map.lines().filter(|l| l.starts_with('|')).collect();
    assert!(
        mapped("state/jobs/prepared.rs", &rows),
        "a name beside its folder's file"
    );
    assert!(
        mapped("service/write/targets.rs", &rows),
        "a path from its module"
    );
    assert!(!mapped("state/nothing.rs", &rows));
    assert!(
        rows.iter().any(|r| r.contains("`*_tests.rs`")),
        "the map states where unit tests live"
    );
    let mut missing = Vec::new();
    for path in files("src", ".rs") {
        let rel = under_src(&path);
        let test = rel.ends_with("tests.rs") || rel.contains("tests/");
        if !test && !mapped(&rel, &rows) {
            missing.push(rel);
        }
    }
    assert!(
        missing.is_empty(),
        "not in ARCHITECTURE.md's tables: {missing:?}"
    );
}

/// Facts defined once: a lock or a wait taken whatever a panic left poisoned goes through
/// `sync.rs` (`lock`, `unpoisoned`), and text is cut at a character boundary by `logtext.rs`
/// alone (`prefix`, `prefix_chars`), in every file under `src/`, its unit tests included (the
/// integration tests, another crate, cannot call them).
#[test]
fn poisoned_locks_and_cuts_of_text_each_have_one_place() {
    let rules: [(&str, &[&str], &str); 3] = [
        (
            "PoisonError",
            &["sync.rs"],
            "take the lock with sync::lock or sync::unpoisoned",
        ),
        (
            "is_char_boundary",
            &["logtext.rs"],
            "cut with logtext::prefix",
        ),
        (
            "char_indices().nth(",
            &["logtext.rs"],
            "cut with logtext::prefix_chars",
        ),
    ];
    let mut found = Vec::new();
    for path in files("src", ".rs") {
        let name = under_src(&path);
        let text = read(&path);
        for (needle, home, fix) in rules {
            if home.contains(&name.as_str()) {
                continue;
            }
            for (n, line) in code_lines(&text) {
                if line.contains(needle) {
                    found.push(format!("src/{name}:{n}: {needle}: {fix}"));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

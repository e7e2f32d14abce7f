//! Reads the reference tables of docs/ for the tests that check them against the code's own
//! tables: the routes (docs/api.md) and the error codes (docs/errors.md). The docs are written
//! for people; these tests keep them true. Test-only: it never reads a file at run time (the
//! pages are compiled in).

/// docs/api.md, which holds the table of routes.
pub const API: &str = include_str!("../docs/api.md");
/// docs/errors.md, which holds the table of error codes.
pub const ERRORS: &str = include_str!("../docs/errors.md");

/// The rows of the table in `page` (named `name` in messages) whose header row is exactly
/// `header`, each row's cells trimmed, with the separator row left out. Panics, naming the page
/// and the header, when there is no such table.
pub fn table(name: &str, page: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = page.lines().skip_while(|line| line.trim() != header);
    assert!(
        lines.next().is_some(),
        "{name} has no table with the header {header:?}"
    );
    lines
        .skip(1)
        .take_while(|line| line.trim_start().starts_with('|'))
        .map(|line| {
            let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
            inner
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

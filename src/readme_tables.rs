//! Reads the tables of README.md for the tests that check them against the code's own tables
//! (the routes, the error codes): the README is written for people, and these tests keep it
//! true.

/// The rows of the README table whose header row is exactly `header`, each row's cells trimmed,
/// with the separator row left out. Panics, naming the header, when there is no such table.
pub fn table(header: &str) -> Vec<Vec<String>> {
    let readme = include_str!("../README.md");
    let mut lines = readme.lines().skip_while(|line| line.trim() != header);
    assert!(
        lines.next().is_some(),
        "README.md has no table with the header {header:?}"
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

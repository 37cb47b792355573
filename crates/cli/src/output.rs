//! How results are shown: a table for people, JSON for scripts.

use clap::ValueEnum;
use serde::Serialize;

/// Output of commands that return records: a table for people, JSON for scripts.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Output {
    /// A table, for people.
    #[default]
    Table,
    /// JSON, for scripts.
    Json,
}

/// Prints a line to stdout. A closed pipe (`quorumca cluster status | head`)
/// ends the program quietly instead of panicking like `println!` does.
pub fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` for command output, through [`emit`].
#[macro_export]
macro_rules! out {
    () => {
        $crate::output::emit(format_args!(""))
    };
    ($($t:tt)*) => {
        $crate::output::emit(format_args!($($t)*))
    };
}

/// Longest cell a table shows, in characters; longer ones end in "…"
/// (`-o json` has them whole). A table is for reading, and one cell of a
/// 200 kB audit detail would make every row that wide.
pub const MAX_CELL_CHARS: usize = 160;

/// Renders rows as an aligned text table. Never panics: rows with more
/// cells than headers get empty headers, and padding is written by hand
/// (a `{:<w$}` width above 65,535 panics).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let shown = |c: &str| -> String {
        let c: String = c
            .chars()
            .map(|ch| if ch.is_control() { ' ' } else { ch })
            .collect();
        if c.chars().count() <= MAX_CELL_CHARS {
            c
        } else {
            let mut s: String = c.chars().take(MAX_CELL_CHARS - 1).collect();
            s.push('…');
            s
        }
    };
    let columns = rows
        .iter()
        .map(Vec::len)
        .chain(std::iter::once(headers.len()))
        .max()
        .unwrap_or(0);
    let grid: Vec<Vec<String>> = std::iter::once(
        (0..columns)
            .map(|i| headers.get(i).copied().unwrap_or("").to_string())
            .collect(),
    )
    .chain(rows.iter().map(|r| {
        (0..columns)
            .map(|i| r.get(i).map(|c| shown(c)).unwrap_or_default())
            .collect()
    }))
    .collect();
    let mut widths = vec![0usize; columns];
    for r in &grid {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    grid.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(c);
                line.extend(std::iter::repeat_n(' ', widths[i] - c.chars().count()));
            }
            line.trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `v` as pretty JSON.
pub fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("serialisable output")
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns_columns() {
        let t = super::table(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "a    bb\nxxx  y");
    }

    /// Security hardening 5: a 200 kB cell (an audit detail) panicked the
    /// CLI in `{:<w$}`; long cells are cut, extra cells shown, none panic.
    #[test]
    fn tables_of_huge_or_ragged_rows_do_not_panic() {
        let huge = "x".repeat(200_000);
        let t = super::table(
            &["SEQ", "DETAIL"],
            &[
                vec!["1".into(), huge.clone()],
                vec!["2".into(), "é\nmultiline".into(), "extra".into()],
                vec![],
            ],
        );
        assert!(t.lines().all(|l| l.chars().count() < 400), "{}", t.len());
        assert!(t.contains('…') && t.contains("extra"));
        assert_eq!(t.matches('\n').count(), 3, "a line per row and the header");
    }
}

//! Markdown built from data: headings, paragraphs, lists and tables made of rows, so a
//! summary is a rendering of the report's data rather than a chain of formatted writes.
//!
//! Changes when the summaries' layout changes; depends on nothing of the bench.

use std::fmt::Display;

/// A markdown document being built.
#[derive(Debug, Default)]
pub struct Doc {
    out: String,
}

impl Doc {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// `#…# text` at `level` (1–6).
    pub fn heading(&mut self, level: usize, text: impl Display) -> &mut Self {
        self.block(format!("{} {text}", "#".repeat(level.clamp(1, 6))))
    }

    /// A paragraph.
    pub fn para(&mut self, text: impl Display) -> &mut Self {
        self.block(text.to_string())
    }

    /// A bullet list (nothing when empty).
    pub fn bullets<T: Display>(&mut self, items: impl IntoIterator<Item = T>) -> &mut Self {
        let list: Vec<String> = items.into_iter().map(|i| format!("- {i}")).collect();
        if list.is_empty() { self } else { self.block(list.join("\n")) }
    }

    /// A table.
    pub fn table(&mut self, table: &Table) -> &mut Self {
        self.block(table.render())
    }

    /// Another document's text, as is.
    pub fn append(&mut self, text: &str) -> &mut Self {
        if text.is_empty() { self } else { self.block(text.trim_end().to_owned()) }
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }

    fn block(&mut self, text: String) -> &mut Self {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        self.out.push_str(&text);
        self.out.push('\n');
        self
    }
}

/// A table: a header row and data rows of cells.
#[derive(Debug, Clone)]
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new<T: Display>(head: impl IntoIterator<Item = T>) -> Self {
        Self { head: head.into_iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row.
    pub fn row<T: Display>(&mut self, cells: impl IntoIterator<Item = T>) -> &mut Self {
        self.rows.push(cells.into_iter().map(|c| c.to_string().replace('|', "\\|")).collect());
        self
    }

    fn render(&self) -> String {
        let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
        let mut out = vec![line(&self.head), format!("|{}", "---|".repeat(self.head.len()))];
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n")
    }
}

/// `v` with `digits` decimals, or `n/a`.
pub fn opt(v: Option<f64>, digits: usize, unit: &str) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}{unit}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_rows_under_their_header() {
        let mut t = Table::new(["a", "b"]);
        t.row(["1", "x|y"]).row([2.5.to_string(), "z".to_owned()]);
        let mut doc = Doc::new();
        doc.heading(2, "T").para("text").table(&t).bullets(["one", "two"]);
        assert_eq!(
            doc.finish(),
            "## T\n\ntext\n\n| a | b |\n|---|---|\n| 1 | x\\|y |\n| 2.5 | z |\n\n- one\n- two\n"
        );
    }
}

//! The last lines a console printed, attached to a probe's failure.

use std::collections::VecDeque;

/// The last console lines, and the unterminated tail (a prompt).
pub(crate) struct Console {
    keep: usize,
    lines: VecDeque<String>,
    partial: String,
}

impl Console {
    pub(crate) fn new(keep: usize) -> Console {
        Console {
            keep,
            lines: VecDeque::new(),
            partial: String::new(),
        }
    }

    /// The unterminated tail so far.
    pub(crate) fn partial(&mut self, text: &str) {
        text.clone_into(&mut self.partial);
    }

    /// A complete line.
    pub(crate) fn line(&mut self, text: &str) {
        self.partial.clear();
        self.lines.push_back(text.to_string());
        if self.lines.len() > self.keep {
            self.lines.pop_front();
        }
    }

    /// The last complete line.
    pub(crate) fn last(&self) -> Option<&str> {
        self.lines.back().map(String::as_str)
    }

    pub(crate) fn last_lines(&self) -> String {
        let mut all: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        if !self.partial.is_empty() {
            all.push(&self.partial);
        }
        all.join("\n")
    }
}

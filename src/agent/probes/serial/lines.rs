//! Turns the bytes a board writes into the lines a probe judges.
//!
//! Real consoles are not tidy: U-Boot and many RTOS shells end lines with
//! CR LF, some with a lone CR; systemd and shells colour their output with
//! ANSI sequences and move the cursor; a baud glitch at reset puts NUL and
//! bytes that are not UTF-8 on the wire; a board spewing a hex dump may
//! never end a line; and a prompt (`bench login: `, `=> `, `uart:~$ `)
//! has no line ending at all. The decoder:
//!
//! - ends a line at LF, at CR, and once at CR LF (also when the two bytes
//!   arrive in different reads);
//! - strips escape sequences (CSI, OSC, two-byte ESC) with `anstyle-parse`,
//!   which follows them across reads;
//! - drops C0 control bytes (NUL, BEL, backspace …) and bytes that are not
//!   UTF-8, counting them as noise. Invalid UTF-8 is removed before the
//!   escape parser sees it, because that parser swallows the byte that ends
//!   a broken sequence, which may be the line ending;
//! - cuts a line at `max_line` characters, so memory stays bounded however
//!   long a line is;
//! - keeps the unterminated tail visible (`tail`), for prompts.

use std::time::Duration;

use anstyle_parse::{DefaultCharAccumulator, Parser, Perform};
use tokio::time::Instant;

/// The longest line kept before it is cut, by default.
pub const MAX_LINE: usize = 4096;

/// A streaming console decoder; feed it reads, take its lines.
#[derive(Debug)]
pub struct Lines {
    parser: Parser<DefaultCharAccumulator>,
    sink: Sink,
    /// The first bytes of a UTF-8 character split across two reads.
    carry: Vec<u8>,
}

#[derive(Debug, Default)]
struct Sink {
    line: String,
    /// Characters in `line` (its length in bytes may be more).
    chars: usize,
    lines: Vec<String>,
    /// The last byte ended a line with CR: an LF right after it is the
    /// same line ending.
    after_cr: bool,
    max_line: usize,
    noise: u64,
}

impl Sink {
    fn end_line(&mut self) {
        self.lines.push(std::mem::take(&mut self.line));
        self.chars = 0;
    }

    fn push(&mut self, c: char) {
        self.after_cr = false;
        self.line.push(c);
        self.chars += 1;
        if self.chars >= self.max_line {
            self.end_line();
        }
    }
}

impl Perform for Sink {
    fn print(&mut self, c: char) {
        self.push(c);
    }

    fn execute(&mut self, byte: u8) {
        match byte {
            b'\n' if self.after_cr => self.after_cr = false,
            b'\n' => self.end_line(),
            b'\r' => {
                self.end_line();
                self.after_cr = true;
            }
            b'\t' => self.push('\t'),
            _ => {
                self.after_cr = false;
                self.noise += 1;
            }
        }
    }
}

impl Default for Lines {
    fn default() -> Lines {
        Lines::new(MAX_LINE)
    }
}

impl Lines {
    pub fn new(max_line: usize) -> Lines {
        Lines {
            parser: Parser::default(),
            sink: Sink {
                max_line: max_line.max(1),
                ..Sink::default()
            },
            carry: Vec::new(),
        }
    }

    /// Decodes one read; returns the lines it completed, oldest first.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut input = std::mem::take(&mut self.carry);
        input.extend_from_slice(bytes);
        let mut rest = &input[..];
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    self.parse(text);
                    rest = &[];
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    self.parse(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            self.sink.noise += bad as u64;
                            self.sink.after_cr = false;
                            rest = &after[bad..];
                        }
                        // A character cut by the end of this read.
                        None => {
                            self.carry = after.to_vec();
                            rest = &[];
                        }
                    }
                }
            }
        }
        std::mem::take(&mut self.sink.lines)
    }

    fn parse(&mut self, text: &str) {
        for byte in text.bytes() {
            self.parser.advance(&mut self.sink, byte);
        }
    }

    /// The unterminated tail so far: a prompt, or a line still arriving.
    pub fn tail(&self) -> &str {
        &self.sink.line
    }

    /// Control and invalid bytes dropped so far.
    pub fn noise(&self) -> u64 {
        self.sink.noise
    }
}

/// Judges a prompt: an unterminated tail that has stayed quiet for
/// `quiet` is judged once, as if it were a line. When that line is later
/// completed (the user typed at the prompt, or the board went on), only
/// what came after the judged part is judged, so a reset or a milestone is
/// never counted twice.
#[derive(Debug)]
pub struct Prompt {
    quiet: Duration,
    /// The latest tail and when it arrived.
    pending: Option<(String, Instant)>,
    /// How much of the current line was judged already, in bytes.
    judged: usize,
}

impl Prompt {
    pub fn new(quiet: Duration) -> Prompt {
        Prompt {
            quiet,
            pending: None,
            judged: 0,
        }
    }

    /// The console's tail changed.
    pub fn partial(&mut self, tail: String, now: Instant) {
        if tail.len() > self.judged {
            self.pending = Some((tail, now));
        }
    }

    /// When the pending tail is due to be judged.
    pub fn due(&self) -> Option<Instant> {
        self.pending.as_ref().map(|(_, at)| *at + self.quiet)
    }

    /// The tail to judge now, if it has been quiet long enough.
    pub fn fire(&mut self, now: Instant) -> Option<String> {
        if self.due().is_none_or(|due| now < due) {
            return None;
        }
        let (tail, _) = self.pending.take()?;
        let fresh = tail.get(self.judged..).unwrap_or_default().to_string();
        self.judged = tail.len();
        Some(fresh)
    }

    /// A line was completed: what of it is still to judge.
    pub fn line<'a>(&mut self, line: &'a str) -> &'a str {
        self.pending = None;
        let judged = std::mem::take(&mut self.judged);
        match line.get(..judged) {
            Some(_) if judged > 0 => line.get(judged..).unwrap_or_default(),
            _ => line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]]) -> (Vec<String>, String) {
        let mut c = Lines::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            lines.extend(c.feed(chunk));
        }
        (lines, c.tail().to_string())
    }

    #[test]
    fn lf_crlf_and_lone_cr_each_end_one_line() {
        let (lines, tail) = decode(&[b"a\nb\r\nc\rd"]);
        assert_eq!(lines, ["a", "b", "c"]);
        assert_eq!(tail, "d");
    }

    #[test]
    fn a_crlf_split_across_reads_is_one_line_ending() {
        let (lines, _) = decode(&[b"U-Boot 2024.01\r", b"\nDRAM: 1 GiB\r", b"\n"]);
        assert_eq!(lines, ["U-Boot 2024.01", "DRAM: 1 GiB"]);
    }

    #[test]
    fn a_prompt_without_a_newline_stays_the_tail() {
        let (lines, tail) = decode(&[b"Debian GNU/Linux 12 bench ttyS0\r\n\r\nbench login: "]);
        assert_eq!(lines, ["Debian GNU/Linux 12 bench ttyS0", ""]);
        assert_eq!(tail, "bench login: ");
    }

    #[test]
    fn ansi_colour_and_cursor_sequences_are_stripped_even_when_split() {
        let (lines, _) = decode(&[
            b"[  \x1b[0;32mOK  \x1b[0m] Reached target \x1b[1mMulti-User",
            b" System\x1b",
            b"[0m.\r\n\x1b[2K\x1b[1G\x1b]0;title\x07uart:~$ \n",
        ]);
        assert_eq!(
            lines,
            ["[  OK  ] Reached target Multi-User System.", "uart:~$ "]
        );
    }

    #[test]
    fn nul_and_invalid_utf8_are_dropped_and_counted_without_losing_a_line_ending() {
        let mut c = Lines::default();
        let mut lines = c.feed(b"\x00\x00\xff\xfeU-Boot SPL\xe2\r\n");
        lines.extend(c.feed(b"\x88\x13\xc3"));
        lines.extend(c.feed(b"\nnext\n"));
        assert_eq!(lines, ["U-Boot SPL", "", "next"]);
        assert!(c.noise() >= 6, "{}", c.noise());
    }

    #[test]
    fn utf8_split_across_reads_is_kept() {
        let text = "temp 42 °C — ok\n".as_bytes();
        let (lines, _) = decode(&[&text[..9], &text[9..10], &text[10..]]);
        assert_eq!(lines, ["temp 42 °C — ok"]);
    }

    #[test]
    fn a_line_without_end_is_cut_at_the_bound() {
        let mut c = Lines::new(100);
        let lines = c.feed(&[b'x'; 250]);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == 100));
        assert_eq!(c.tail().len(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_prompt_is_judged_once_and_its_completion_only_for_the_rest() {
        let mut p = Prompt::new(Duration::from_millis(300));
        p.partial("bench lo".into(), Instant::now());
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.partial("bench login: ".into(), Instant::now());
        assert_eq!(p.fire(Instant::now()), None, "still arriving");
        tokio::time::sleep(Duration::from_millis(299)).await;
        assert_eq!(p.fire(Instant::now()), None);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(p.fire(Instant::now()).as_deref(), Some("bench login: "));
        assert_eq!(p.fire(Instant::now()), None, "judged once");
        assert_eq!(p.due(), None);
        // The operator types a user name: the completed line adds only it.
        p.partial("bench login: root".into(), Instant::now());
        assert_eq!(p.line("bench login: root"), "root");
        assert_eq!(p.line("next line"), "next line");
    }

    #[tokio::test(start_paused = true)]
    async fn a_line_completed_before_the_quiet_moment_is_judged_whole() {
        let mut p = Prompt::new(Duration::from_millis(300));
        p.partial("Starting ker".into(), Instant::now());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(p.line("Starting kernel ..."), "Starting kernel ...");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(p.fire(Instant::now()), None);
    }
}

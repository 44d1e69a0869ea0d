//! The kit's one progress printer: a status line rewritten in place with `\r` (a terminal and a
//! notebook's stdout both show it as one line that changes), which ends when a line that stays
//! is printed. The training bar (`train`) and the downloader (`data::download`) each decide what
//! the line says and how often; this writes it.
use std::io::Write;

/// A line of stdout rewritten in place.
#[derive(Debug, Default)]
pub(crate) struct StatusLine {
    /// Characters of the text on the open line (0: no line open).
    width: usize,
}

impl StatusLine {
    /// Rewrites the open line with `text` (blanking what a longer earlier text left) and leaves
    /// it open.
    pub(crate) fn redraw(&mut self, text: &str) {
        self.write(text, false);
    }

    /// Writes `text` over the open line (or on a new one) and ends it: the next output starts on
    /// a line of its own.
    pub(crate) fn finish(&mut self, text: &str) {
        self.write(text, true);
    }

    fn write(&mut self, text: &str, newline: bool) {
        let chars = text.chars().count();
        let pad = self.width.saturating_sub(chars);
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r{text}{}", " ".repeat(pad));
        if newline {
            let _ = writeln!(out);
            self.width = 0;
        } else {
            self.width = chars;
        }
        let _ = out.flush();
    }
}

/// "1h02m", "3m05s", "42s".
pub(crate) fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

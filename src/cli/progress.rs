//! Progress of long commands (`dlog append` from stdin, `dlog read` into a
//! file or pipe) on stderr, only when stderr is a terminal: one line,
//! rewritten at most
//! every [`EVERY`], cleared at the end. Piped or redirected stderr gets
//! nothing, so scripts see only errors there.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is rewritten.
const EVERY: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub struct Progress {
    /// `None` when stderr is not a terminal.
    shown: Option<Shown>,
    records: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Shown {
    verb: &'static str,
    started: Instant,
    last: Instant,
    /// Whether a line is on the screen.
    drawn: bool,
}

impl Progress {
    /// `verb` names the work: "appended", "read". Shown only when stderr
    /// is a terminal, and with `streams_stdout` (the command prints as it
    /// goes) only when stdout is not: records on the same screen show the
    /// progress themselves.
    pub fn new(verb: &'static str, streams_stdout: bool) -> Progress {
        let now = Instant::now();
        let show =
            std::io::stderr().is_terminal() && !(streams_stdout && std::io::stdout().is_terminal());
        Progress {
            shown: show.then_some(Shown {
                verb,
                started: now,
                last: now,
                drawn: false,
            }),
            records: 0,
            bytes: 0,
        }
    }

    /// Counts `records` of `bytes` more; redraws when due.
    pub fn add(&mut self, records: u64, bytes: u64) {
        self.records += records;
        self.bytes += bytes;
        let Some(shown) = &mut self.shown else {
            return;
        };
        if shown.last.elapsed() < EVERY {
            return;
        }
        shown.last = Instant::now();
        shown.drawn = true;
        let line = line(
            shown.verb,
            self.records,
            self.bytes,
            shown.started.elapsed(),
        );
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
    }

    /// Clears the line (the command's own output follows).
    pub fn finish(&mut self) {
        if let Some(shown) = &mut self.shown
            && shown.drawn
        {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
            shown.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `appended 120000 records, 11.4 MiB, 3.2 s (37500 records/s)`.
fn line(verb: &str, records: u64, bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(0.001);
    format!(
        "{verb} {records} records, {:.1} MiB, {:.1} s ({:.0} records/s)",
        bytes as f64 / (1024.0 * 1024.0),
        elapsed.as_secs_f64(),
        records as f64 / seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_records_bytes_and_rate() {
        assert_eq!(
            line(
                "appended",
                120_000,
                12 * 1024 * 1024,
                Duration::from_secs(4)
            ),
            "appended 120000 records, 12.0 MiB, 4.0 s (30000 records/s)"
        );
    }
}

//! The `dlog` command (docs/cli.md): run nodes, administer logs, append, read,
//! benchmark. Errors print one line on stderr and exit non-zero.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod config;
mod health;
mod http;
mod kafka;
mod metrics;
mod server;
mod telemetry;
mod tls_incoming;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    crate::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads(&args))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("dlog: start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(args));
    // Do not wait for blocking work still running (a node that lost its
    // lease must exit at once).
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = format!("{err:#}");
            eprintln!("dlog: {message}{}", scheme_hint(&message));
            ExitCode::FAILURE
        }
    }
}

/// A hint for a client and a port that disagree about TLS: the errors
/// themselves name only HTTP/2 or TLS internals.
fn scheme_hint(message: &str) -> &'static str {
    let lower = message.to_lowercase();
    let closed = ["connection closed", "reset by peer", "broken pipe"]
        .iter()
        .any(|closed| lower.contains(closed));
    if message.contains("frame with invalid size") {
        // A TLS server's alert read as an HTTP/2 frame.
        " (is this a TLS port? use https:// and --tls-ca)"
    } else if message.contains("InvalidContentType") {
        // Plain HTTP/2 read as a TLS record.
        " (is this a plaintext port? use http://)"
    } else if message.contains("http://") && closed {
        // A TLS server may also just close the connection (its alert
        // unread), which other failures do too: hence only a maybe.
        " (if this port speaks TLS, use https:// and --tls-ca)"
    } else {
        ""
    }
}

/// Async worker threads: `TOKIO_WORKER_THREADS` when set; `dlog bench
/// --threads` for the load generator (its CPU competes with the servers'
/// on a small machine); else one per core (tokio's default). One worker
/// fewer than cores measured faster on two cores but starved the
/// ingest-to-cache connection with 10 000 logs (BENCHMARKS.md).
fn worker_threads(args: &cli::Args) -> usize {
    if let Some(threads) = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return threads;
    }
    if let cli::Command::Bench(bench) = &args.command {
        return bench.threads.max(1);
    }
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::scheme_hint;

    #[test]
    fn a_scheme_mismatch_gets_a_hint_and_nothing_else_does() {
        let unreachable = "cannot reach the ingest endpoint";
        let tls_port =
            format!("{unreachable} http://h:1 (h2 protocol error: frame with invalid size)");
        assert!(scheme_hint(&tls_port).contains("use https://"));
        let closed = format!("{unreachable} http://h:1 (transport error: connection closed)");
        assert!(scheme_hint(&closed).contains("if this port speaks TLS"));
        let pipe = format!("{unreachable} http://h:1 (stream closed because of a broken pipe)");
        assert!(scheme_hint(&pipe).contains("if this port speaks TLS"));
        let plain_port = format!(
            "{unreachable} https://h:1 (received corrupt message of type InvalidContentType)"
        );
        assert!(scheme_hint(&plain_port).contains("use http://"));
        assert_eq!(scheme_hint("log ns/x not found"), "");
        let tls_closed = format!("{unreachable} https://h:1 (connection closed)");
        assert_eq!(scheme_hint(&tls_closed), "");
    }
}

//! The `dlog` command (DESIGN §8): run nodes, administer logs, append, read,
//! benchmark. Errors print one line on stderr and exit non-zero.

use std::process::ExitCode;

use clap::Parser;

#[path = "../cli/mod.rs"]
mod cli;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    dlog_infra::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("dlog: start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dlog: {err:#}");
            ExitCode::FAILURE
        }
    }
}

//! `kuper-bridge-bench`: drives a real `kuper-bridge` process over loopback and prints what
//! it sustains. The simulator (the fake Kuper) runs in this process; the gateway is the
//! release binary, spawned with a temporary configuration and database. See BENCHMARKS.md.

use clap::Parser;
use cli::{Args, Command};
use std::process::ExitCode;

mod board;
mod ceiling;
mod cli;
mod ctl;
mod gateway;
mod ingest;
mod load;
mod probes;
mod profile;
mod report;
mod run;
mod sampling;
mod session;
mod soak;

fn main() -> ExitCode {
    let mut args = Args::parse();
    // Threads named apart from the gateway's (`tokio-rt-worker`), so that a whole-machine
    // profile (`--perf`) tells the load generator from the gateway.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("bench-worker").build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kuper-bridge-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.command.take() {
            Some(Command::Soak(soak_args)) => soak::run(soak_args).await,
            Some(Command::Board(board_args)) => board::run(board_args).await,
            Some(Command::Ingest(ingest_args)) => ingest::run(ingest_args).await,
            None => run::run(args).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("kuper-bridge-bench: correctness checks failed (see the table); figures are not thresholds");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kuper-bridge-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `autodev` binary: parse arguments, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = autodev::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("autodev: cannot start the async runtime: {e}");
            return ExitCode::from(autodev::cli::exit::SANDBOX);
        }
    };
    let result = runtime.block_on(autodev::app::run(cli));
    // Background tasks (signal handler, stray readers) must not delay exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("autodev: {err:#}");
            ExitCode::from(autodev::app::exit_code_for(&err))
        }
    }
}

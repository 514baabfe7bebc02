//! The `autodev` binary: parse arguments, run, map errors to exit codes.

use std::process::ExitCode;

mod app;
mod cli;

use autodev::errln;
use cli::exit;
use cli::LoadError;

fn main() -> ExitCode {
    // A bug must still end in one line, not a Rust panic message.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        errln!(
            "autodev: internal error{at}: {}; please report it (containers can be removed with `autodev clean`)",
            what.replace('\n', " ")
        );
    }));
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let loaded = match cli::load(&argv, &|k| std::env::var(k).ok(), &cwd) {
        Ok(loaded) => loaded,
        // --help and --version print as clap formats them.
        Err(LoadError::Clap(e)) if !e.use_stderr() => e.exit(),
        Err(e) => {
            errln!("autodev: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("autodev: cannot start the async runtime: {e}");
            return ExitCode::from(exit::SANDBOX);
        }
    };
    let result = runtime.block_on(app::run(loaded));
    // Background tasks (signal handler, stray readers) must not delay exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            errln!("autodev: {}", app::error_line(&err));
            ExitCode::from(app::exit_code_for(&err))
        }
    };
    // Output lost to a full disk is a failure even when the run went well.
    match autodev::term::failure() {
        Some(why) => {
            errln!("autodev: {why}");
            ExitCode::from(exit::OUTPUT)
        }
        None => code,
    }
}

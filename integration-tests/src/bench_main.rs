//! How a benchmark program ends: its run raced against Ctrl-C and SIGTERM (on a signal the run is dropped, which
//! stops what it started and removes its work directory), and the outcome as the exit code, with the error's
//! chain on stderr.

use std::future::Future;
use std::process::ExitCode;

/// Runs `run` until it ends or a signal comes; `measured` names what a signal stops (e.g. `the agent`).
pub async fn run_until_signal<E: std::fmt::Display>(
    measured: &str,
    run: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    let failure = tokio::select! {
        result = run => match result {
            Ok(()) => return ExitCode::SUCCESS,
            Err(e) => format!("{e:#}"),
        },
        () = wisp_shared::runtime::shutdown_signal() => format!("interrupted; {measured} was stopped"),
    };
    eprintln!("FAILED: {failure}");
    ExitCode::FAILURE
}

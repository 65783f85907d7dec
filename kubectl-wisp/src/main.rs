//! `kubectl-wisp`: exit 0 when everything worked, 1 when a doctor check failed, 2 when the command could not
//! run (bad flags, unreachable cluster, missing pod).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use kubectl_wisp::cli::Cli;

fn main() -> ExitCode {
    wisp_shared::runtime::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(kubectl_wisp::app::run(cli)) {
        Ok(output) => {
            if let Some(note) = output.stderr {
                eprintln!("{note}");
            }
            // A closed pipe (`| head`) is not an error worth reporting.
            let _ = std::io::stdout().write_all(output.stdout.as_bytes());
            if output.checks_failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(2)
        }
    }
}

//! What `main` runs: the parsed command against the cluster of the current kubectl context, to the text to
//! print and whether a check failed.

use crate::cli::{Cli, Command, ConnectArgs, ConnectOutput, DoctorArgs, DoctorOutput};
use crate::cluster::{Cluster, ClusterError};
use crate::connect::{self, ConnectError, ConnectOptions};
use crate::doctor::target::TargetError;
use crate::doctor::{self, DoctorError};

/// What to print, and how the command ended.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    /// Notes that are not the command's output (e.g. the issuer could not be read).
    pub stderr: Option<String>,
    /// A doctor check failed: exit code 1.
    pub checks_failed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Doctor(#[from] DoctorError),
    #[error(transparent)]
    Target(#[from] TargetError),
}

pub async fn run(cli: Cli) -> Result<Output, RunError> {
    match cli.command {
        Command::Connect(args) => run_connect(args).await,
        Command::Doctor(args) => run_doctor(args).await,
    }
}

async fn run_connect(args: ConnectArgs) -> Result<Output, RunError> {
    let cluster = Cluster::connect().await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.default_namespace().to_string());
    let service_account = (!args.managed_identity)
        .then_some(args.service_account.as_deref())
        .flatten();
    let tenant = connect::tenant(&cluster, args.tenant_id.as_deref(), &namespace, service_account).await?;
    let connection = args.connection(&namespace, &tenant).map_err(ConnectError::from)?;
    let options = ConnectOptions {
        dry_run: args.dry_run,
        yaml: args.output == Some(ConnectOutput::Yaml),
    };
    let printed = connect::run(&cluster, &connection, options).await?;
    Ok(Output {
        stdout: printed.stdout,
        stderr: printed.note,
        checks_failed: false,
    })
}

async fn run_doctor(args: DoctorArgs) -> Result<Output, RunError> {
    let target = args.target()?;
    let cluster = Cluster::connect().await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.default_namespace().to_string());
    let report = doctor::run(&cluster, &target, &namespace).await?;
    let stdout = match args.output {
        Some(DoctorOutput::Json) => report.json(),
        None => report.text(),
    };
    Ok(Output {
        stdout,
        stderr: None,
        checks_failed: !report.ok,
    })
}

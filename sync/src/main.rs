use anyhow::Context;
use clap::Parser;

#[tokio::main(worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    wisp_shared::runtime::install_crypto_provider();
    let cli = wisp_sync::cli::Cli::parse();
    wisp_shared::runtime::init_logging(&cli.log_level);
    wisp_sync::app::run(cli, wisp_shared::runtime::shutdown_signal())
        .await
        .context("wisp-sync failed")
}

use anyhow::Context;
use clap::Parser;
use wisp_webhook::cli::{Cli, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wisp_shared::runtime::install_crypto_provider();
    let cli = Cli::parse();
    wisp_shared::runtime::init_logging(&cli.log_level);
    let config = Config::from_cli(cli).context("invalid configuration")?;
    wisp_webhook::app::run(config, wisp_shared::runtime::shutdown_signal())
        .await
        .context("wisp-webhook failed")
}

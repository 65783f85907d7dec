use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = wisp_agent::config::Cli::parse();
    wisp_shared::runtime::install_crypto_provider();
    wisp_shared::runtime::init_logging(&cli.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(wisp_agent::server::run(cli))?;
    Ok(())
}

//! `wisp-https-probe URL`: fetches a URL with reqwest's default TLS and DNS setup (the system trust store through
//! rustls-platform-verifier, the system resolver) and prints the status code and body. Tests run it as a child
//! process to check that a program trusts the test CA and resolves the fake host names exactly as wisp's own
//! binaries would, with no test-only code in those binaries.

use anyhow::Context;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    wisp_shared::runtime::install_crypto_provider();
    let url = std::env::args().nth(1).context("usage: wisp-https-probe URL")?;
    let response = reqwest::get(&url).await.map_err(|e| {
        // reqwest's Display hides the TLS or DNS cause, which is what the caller needs to see.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        anyhow::anyhow!("GET {url}: {message}")
    })?;
    println!("{}", response.status().as_u16());
    println!("{}", response.text().await.context("reading the response body")?);
    Ok(())
}

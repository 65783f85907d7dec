//! The binary a benchmark measures: from `--bin-dir`, or built with the benchmark's own profile when it was
//! started by `cargo run` (so `cargo run --release --bin wisp-sync-bench` measures a release `wisp-sync`), else
//! found next to the benchmark's executable.

use std::path::PathBuf;

use crate::process;

/// Where a benchmark finds the program it measures; flattened into each benchmark's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct BinaryFlags {
    /// Directory holding the program measured (default: next to this executable).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,

    /// When started by `cargo run`, do not build the program measured first.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchBinaryError {
    #[error("{0} does not exist (from --bin-dir)")]
    NotInBinDir(PathBuf),
    #[error("running cargo build for {bin} failed")]
    Cargo {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cargo build -p {package} --bin {bin} failed ({status})")]
    Build {
        package: String,
        bin: String,
        status: std::process::ExitStatus,
    },
    #[error("{0}")]
    Missing(String),
}

/// The path of `bin` of `package`: `--bin-dir`/`bin` when a directory is given; otherwise, unless `--no-build`,
/// built first by `cargo build` when this process was started by `cargo run` (the `CARGO` variable is set), with
/// `--release` when this executable is a release build; then the one beside this executable. Warns on stderr
/// when that is not a release build, whose figures are not worth recording.
pub fn bench_binary(package: &str, bin: &str, flags: &BinaryFlags) -> Result<PathBuf, BenchBinaryError> {
    if let Some(dir) = &flags.bin_dir {
        let path = dir.join(bin);
        if !path.is_file() {
            return Err(BenchBinaryError::NotInBinDir(path));
        }
        return Ok(path);
    }
    let release = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.ends_with("release")))
        .unwrap_or(false);
    if !flags.no_build
        && let Some(cargo) = std::env::var_os("CARGO")
    {
        eprintln!(
            "building {bin} (cargo build -p {package}{})",
            if release { " --release" } else { "" }
        );
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--quiet", "-p", package, "--bin", bin]);
        if release {
            build.arg("--release");
        }
        if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
            build.current_dir(dir);
        }
        let status = build.status().map_err(|source| BenchBinaryError::Cargo {
            bin: bin.to_string(),
            source,
        })?;
        if !status.success() {
            return Err(BenchBinaryError::Build {
                package: package.to_string(),
                bin: bin.to_string(),
                status,
            });
        }
    }
    if !release {
        eprintln!("warning: this is not a release build; run with `cargo run --release` for figures worth recording");
    }
    process::find_binary(bin).map_err(BenchBinaryError::Missing)
}

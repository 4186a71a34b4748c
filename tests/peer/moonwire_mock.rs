//! `moonwire` (the same command line, `src/cli`) built with the
//! dev-dependency features, so it accepts the mock server's cert chain
//! (whatsapp-rust's `danger-skip-cert-chain-verify`). For the side-by-side
//! benchmark (`bench.mjs`) only; a normal build never has that feature.

#[path = "../../src/cli/mod.rs"]
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match cli::run(cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("moonwire: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

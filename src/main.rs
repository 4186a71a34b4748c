//! The `moonwire` command line: the edge where errors become messages and
//! exit codes (anyhow); everything else lives in the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("moonwire: error: {e:#}");
            ExitCode::from(match e.downcast_ref::<moonwire::config::ConfigError>() {
                Some(_) => 2,
                None => 1,
            })
        }
    }
}

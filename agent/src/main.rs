//! The `rollgate` binary: parse the command line, load the configuration,
//! run the subcommand. Exit status 2 means bad configuration.

use std::process::ExitCode;

use clap::Parser;
use rollgate::cli::{Cli, Command};
use rollgate::config::{Config, Sources};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&Sources::from_process(cli.config.clone())) {
        Ok(c) => c,
        Err(e) => {
            eprint!("rollgate: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::CheckConfig => {
            print!("{}", config.to_toml());
            eprintln!("rollgate: configuration is valid");
            ExitCode::SUCCESS
        }
    }
}

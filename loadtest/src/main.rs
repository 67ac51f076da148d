//! `tagcast-loadtest`: the load-test harness and mock PNS servers.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tagcast-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark the registry: build N installations, measure upserts, resolution, memory,
    /// recovery.
    Registry(tagcast_loadtest::registry_bench::RegistryArgs),
    /// Run the mock APNs / FCM / WNS / Web Push servers until stopped.
    Mock(tagcast_loadtest::mock::cli::MockArgs),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Registry(args)) => tagcast_loadtest::registry_bench::main(args),
        Some(Command::Mock(args)) => tagcast_loadtest::mock::cli::run(args),
        None => Err("no command given".into()),
    }
}

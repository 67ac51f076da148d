//! `tagcast-loadtest`: the load-test harness, and the `mock` command (the mock PNS servers of
//! `tagcast-mock`).

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tagcast-loadtest",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a command: the delivery load test (the main job), with these options.
    #[command(flatten)]
    delivery: tagcast_loadtest::delivery::DeliveryArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark the registry: build N installations, measure upserts, resolution, memory,
    /// recovery.
    Registry(tagcast_loadtest::registry_bench::RegistryArgs),
    /// Broadcast to N generated devices through the engine against in-process mocks and
    /// verify every delivery.
    Delivery(tagcast_loadtest::delivery::DeliveryArgs),
    /// Run the mock APNs / FCM / WNS / Web Push servers until stopped.
    Mock(tagcast_mock::cli::MockArgs),
    /// Measure the REST API (`tagcast serve`) over HTTP/2 on loopback: installation PUTs and
    /// sends per second against an in-process server (`--mode throughput`, the default), or
    /// per-event sends of three kinds against a `tagcast serve` process (`--mode events`).
    Server(tagcast_loadtest::server_bench::ServerArgs),
    /// Per-event sends through the library: `Engine::send` to one installation and
    /// `Engine::send_to_handles` with one handle, a closed loop of sends in flight against
    /// the in-process mock APNs; sends per second, start to final report p50/p99, CPU per
    /// 1,000 deliveries.
    Events(tagcast_loadtest::library_events::EventsArgs),
    /// Soak a `tagcast serve` process: minutes of mixed traffic with idle and slow
    /// connections, resident memory over time, then kill -9, restart and a check that every
    /// acknowledged write is there.
    Soak(tagcast_loadtest::soak::SoakArgs),
    /// Cluster mode under faults: NATS servers and N `tagcast serve` nodes as processes on
    /// loopback, devices registered through REST, a broadcast with scenario S (a node
    /// killed, stopped, cut off NATS or added; a NATS server killed), verified against the
    /// mock APNs' accounting. Exits non-zero when a guarantee fails.
    Cluster(tagcast_loadtest::cluster::ClusterArgs),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Registry(args)) => tagcast_loadtest::registry_bench::main(args),
        Some(Command::Delivery(args)) => tagcast_loadtest::delivery::main(args),
        Some(Command::Mock(args)) => tagcast_mock::cli::run(args),
        Some(Command::Server(args)) => tagcast_loadtest::server_bench::main(&args),
        Some(Command::Events(args)) => tagcast_loadtest::library_events::main(args),
        Some(Command::Soak(args)) => tagcast_loadtest::soak::main(args),
        Some(Command::Cluster(args)) => tagcast_loadtest::cluster::main(args),
        // The main job: the delivery load test (1,000,000 devices, APNs and FCM, embedded
        // mocks by default).
        None => tagcast_loadtest::delivery::main(cli.delivery),
    }
}

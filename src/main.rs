//! `tagcast serve --config tagcast.toml`: the engine behind a Notification-Hubs-compatible
//! REST API (docs/operations.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The binary's allocator; an embedder of the library chooses its own. With glibc malloc the
/// server needed an arena cap and a `malloc_trim` thread to keep its memory flat (pages freed
/// inside per-thread arenas stayed resident) and spent ~15% of its CPU on per-event sends in
/// malloc; mimalloc returns freed pages by itself (the 10-minute soak: flat, ratio 1.04) and is
/// cheaper (docs/benchmarks.md, "Performance (issue 17)", fourth round).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tagcast", version, about = "Push-notification fan-out engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Notification Hubs REST API for the hubs of a configuration file.
    Serve {
        /// The configuration file (TOML; docs/operations.md).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = match &cli.command {
        Command::Serve { config } | Command::Check { config } => config.clone(),
    };
    let config = match tagcast::server::ServerConfig::from_file(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tagcast: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Check { .. } = cli.command {
        let mode = match &config.cluster {
            Some(c) => format!(", cluster node {:?}", c.node),
            None => String::new(),
        };
        println!(
            "{}: ok ({} hubs{mode})",
            config_path.display(),
            config.hubs.len()
        );
        return ExitCode::SUCCESS;
    }
    if let Err(e) = tagcast::server::init_logging(&config.log) {
        eprintln!("tagcast: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tagcast: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        // Handlers first: a SIGTERM that arrives once "serving on" is printed (a supervisor
        // stopping a fresh instance) must shut down gracefully, not kill the process.
        let signals = Signals::install();
        let server = match tagcast::server::Server::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tagcast: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("tagcast: serving on {}", server.local_addr());
        signals.wait(&server).await;
        eprintln!("tagcast: shutting down");
        server.shutdown().await;
        eprintln!("tagcast: stopped");
        ExitCode::SUCCESS
    })
}

/// SIGTERM and SIGINT (stop) and SIGHUP (reload the TLS certificate), caught from the moment
/// they are installed.
struct Signals(
    Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
);

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Signals(Some((term, int, hup))),
            _ => Signals(None),
        }
    }

    /// Returns at the first SIGTERM or SIGINT, reloading the certificate at each SIGHUP;
    /// never without signal handling (run until killed).
    async fn wait(self, server: &tagcast::server::Server) {
        let Some((mut term, mut int, mut hup)) = self.0 else {
            std::future::pending::<()>().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => {
                    if let Err(e) = server.reload_tls() {
                        eprintln!("tagcast: reloading the TLS certificate failed, keeping the old one: {e}");
                    }
                }
            }
        }
    }
}

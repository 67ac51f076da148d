//! `tagcast serve --config tagcast.toml`: the engine behind a Notification-Hubs-compatible
//! REST API (docs/operations.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The binary's allocator; an embedder of the library chooses its own.
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
    limit_malloc_arenas();
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
    start_malloc_trim();
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

/// glibc malloc gives each thread that contends for an arena a new one, up to 8 per core; the
/// server's tokio workers and blocking-pool threads end up spread over many arenas, each
/// keeping its own partly used pages, which [`start_malloc_trim`] cannot hand back. One arena
/// per core (at least 2) took the 10-minute soak's post-warm-up growth from 1.15-1.25x to 1.05x
/// (docs/benchmarks.md, "Server soak"). Called before any thread starts; an operator's own
/// `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES=glibc.malloc.arena_max=N` is left alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    let set_by_operator = std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
    if set_by_operator {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` only sets a malloc parameter under malloc's own lock; it runs first
    // thing in `main`, before any thread of ours starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// How often glibc is asked to hand free memory back ([`start_malloc_trim`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// glibc malloc returns memory to the kernel only from the top of an arena; pages freed in the
/// middle of its per-thread arenas stay resident. Under the soak's mixed load that made the
/// server's resident memory keep growing after its live heap had levelled, by ~2 MiB for each
/// MiB of heap growth (docs/benchmarks.md, "Server soak"). `malloc_trim(0)` releases every
/// whole free page of every arena (`MADV_DONTNEED`); a background thread calls it every
/// [`MALLOC_TRIM_INTERVAL`]. Other C libraries and allocators: nothing to do.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn start_malloc_trim() {
    let spawned = std::thread::Builder::new()
        .name("tagcast-malloc-trim".into())
        .spawn(|| loop {
            std::thread::sleep(MALLOC_TRIM_INTERVAL);
            // SAFETY: `malloc_trim` has no preconditions: it takes glibc's own arena locks,
            // touches only memory malloc owns and is free, and may be called from any thread.
            unsafe {
                libc::malloc_trim(0);
            }
        });
    if let Err(e) = spawned {
        eprintln!("tagcast: not trimming malloc's free memory: {e}");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn start_malloc_trim() {}

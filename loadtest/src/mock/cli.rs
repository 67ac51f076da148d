//! The `mock` command: runs the mock servers until stopped.

/// Options of the `mock` command.
#[derive(Debug, clap::Args)]
pub struct MockArgs {}

/// Runs the mock servers until stopped.
pub fn run(_args: MockArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err("the mock command is not built yet".into())
}

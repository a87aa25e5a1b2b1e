//! placeholder
#[derive(clap::Args)]
pub struct ServeArgs {}
pub fn init_logging(_d: &str) {}
pub async fn run(_a: ServeArgs) -> anyhow::Result<()> { Ok(()) }

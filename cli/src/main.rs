//! `archgate`: plan and publish multi-arch indexes from a compose.

mod inspect;
mod progress;
mod status;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use archgate_core::{ErrorKind, Policy, Report};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use archgate_config as config;
use archgate_config::Options;
use archgate_runner::{Env, RunError, Runner};

/// The version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ARCHGATE_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "archgate",
    version = VERSION,
    about = "Publish multi-arch container indexes from a compose without silently dropping an arch",
    after_help = "Exit codes: 0 every target published or unchanged; 3 a target refused by the gate; \
1 an error; 2 bad usage or configuration; 4 (status) repositories disagree.\n\
Documentation: docs/ in the archgate repository, and man archgate."
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug). ARCHGATE_LOG takes a tracing filter.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// No progress display (it is only ever shown on a terminal's stderr).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read everything, decide every target, write nothing.
    Plan(RunArgs),
    /// Decide every target and publish what the gate allows.
    Publish {
        #[command(flatten)]
        run: RunArgs,
        /// Write the JSON report to FILE.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Read everything and decide, but write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// What every repository of every image holds now, and whether they agree.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// The compose whose tags are looked at, overriding [source] location.
        #[arg(long, value_name = "LOCATION")]
        compose: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run as a service: publish every compose announced on the message queue ([consume]).
    ///
    /// FILE is an archgate.toml with a [consume] table, or a fedora-messaging
    /// configuration file (top-level amqp_url; archgate's tables under
    /// [consumer_config]). Before taking a message it checks its broker
    /// permissions (exit 2 naming a missing one). SIGTERM or SIGINT: finish
    /// the current messages and exit 0; a second one: exit at once. See
    /// docs/service.md.
    #[command(verbatim_doc_comment)]
    Consume {
        #[command(flatten)]
        config: ServiceConfigArg,
    },
    /// List what the service set aside (QUEUE.failed), or move it back to its queue.
    ///
    /// Takes every message QUEUE.failed holds, prints its compose and why it
    /// was set aside, and (unless --list) sends it back to the queue, where
    /// the active consumer runs it again with its tries counted anew. With
    /// --compose, only that compose's messages move; the others stay. Uses
    /// the same configuration, and the same broker rights, as consume. See
    /// docs/service.md, "Replaying what was set aside".
    #[command(verbatim_doc_comment)]
    Replay {
        #[command(flatten)]
        config: ServiceConfigArg,
        /// Only the messages of this compose (its compose_id); repeatable.
        #[arg(long = "compose", value_name = "COMPOSE_ID")]
        composes: Vec<String>,
        /// List, move nothing.
        #[arg(long)]
        list: bool,
    },
    /// Source plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions { shell: clap_complete::Shell },
    /// Write man pages (archgate.1 and one per command) into DIR.
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Show what a reference points to: digest, media type, and each entry.
    Inspect {
        /// oci:DIR:TAG or docker://HOST/PATH:TAG (a bare HOST/PATH:TAG too).
        reference: String,
        /// Take [registry] settings (tls-verify, auth-file) from this configuration.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load a plugin, print its name and ABI version, and a summary of what it returns.
    Check {
        /// The plugin's shared library.
        library: PathBuf,
        /// The location handed to it.
        #[arg(long)]
        location: Option<String>,
        /// Its settings, as JSON.
        #[arg(long, default_value = "{}")]
        settings: String,
        /// Images to ask for (default: fedora).
        #[arg(long = "image")]
        images: Vec<String>,
    },
}

/// `-c FILE` of the service's commands: else `FEDORA_MESSAGING_CONF`, as
/// fedora-messaging finds its file, else `archgate.toml`.
#[derive(Args)]
struct ServiceConfigArg {
    /// The configuration file (an archgate.toml, or a fedora-messaging file).
    /// Default: $FEDORA_MESSAGING_CONF, else archgate.toml.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ServiceConfigArg {
    fn path(&self) -> PathBuf {
        match (&self.config, std::env::var_os("FEDORA_MESSAGING_CONF")) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from("archgate.toml"),
        }
    }
}

/// `-c FILE`, shared by the commands that read a configuration.
#[derive(Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "archgate.toml"
    )]
    config: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The compose to read, overriding [source] location: a path, a URL, or a Koji task id.
    #[arg(long, value_name = "LOCATION")]
    compose: Option<String>,
    /// Override the gate policy of every image.
    #[arg(long, value_parser = parse_policy)]
    policy: Option<Policy>,
    /// How to print the report on stdout (markdown: a CI job summary).
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Publish even where a target holds a newer compose: an intended
    /// rollback (without it, a tag never goes back to an older compose).
    #[arg(long)]
    allow_older: bool,
    /// The build id (the `registry` source): overrides [source] build; a
    /// tag never goes back to an older build.
    #[arg(long, value_name = "ID")]
    build_id: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    Markdown,
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The service logs one line per message: info by default.
    let verbose = match cli.command {
        Command::Consume { .. } | Command::Replay { .. } => cli.verbose.max(1),
        _ => cli.verbose,
    };
    // The service's metrics hear of every run's progress (`/live`).
    let metrics = archgate_service::Metrics::new();
    let live = matches!(cli.command, Command::Consume { .. }).then(|| metrics.clone());
    // Errors mailed as the service's file says (`[log_config]`); the file
    // is read again, and any problem with it reported, by `consume`.
    let mail = match &cli.command {
        Command::Consume { config } => config::load(&config.path())
            .ok()
            .and_then(|l| l.mail_spec()),
        _ => None,
    };
    init_logging(verbose, cli.quiet, live, mail);
    let code = match cli.command {
        Command::Plan(run) => run_and_report(&run, true, None),
        Command::Publish {
            run,
            report,
            dry_run,
        } => run_and_report(&run, dry_run, report.as_deref()),
        Command::Status {
            config,
            compose,
            format,
        } => status(&config.config, compose, format),
        Command::Consume { config } => consume(&config.path(), metrics),
        Command::Replay {
            config,
            composes,
            list,
        } => replay(&config.path(), composes, list),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "archgate", &mut std::io::stdout());
            0
        }
        Command::Manpages { dir } => match manpages(&dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("archgate: {}: {e}", dir.display());
                1
            }
        },
        Command::Plugin(PluginCommand::Check {
            library,
            location,
            settings,
            images,
        }) => plugin_check(&library, location, &settings, images),
        Command::Inspect {
            reference,
            format,
            config,
        } => match config.map(|c| config::load(&c)).transpose() {
            Ok(loaded) => inspect::inspect(&reference, format == Format::Json, loaded.as_ref()),
            Err(e) => fail(&config_error(e)),
        },
    };
    ExitCode::from(code)
}

/// Logs on stderr; and, when stderr is a terminal and `--quiet` is not
/// given, the progress display there too.
fn init_logging(
    verbose: u8,
    quiet: bool,
    live: Option<std::sync::Arc<archgate_service::Metrics>>,
    mail: Option<archgate_service::MailSpec>,
) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARCHGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let not_progress =
        tracing_subscriber::filter::filter_fn(|m| m.target() != archgate_native::progress::TARGET);
    let terminal = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry();
    if terminal && !quiet {
        let progress = progress::ProgressLayer::new();
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(progress.writer())
            .with_ansi(true)
            .with_target(false)
            .with_filter(filter)
            .with_filter(not_progress);
        registry
            .with(logs)
            .with(progress)
            .with(live.map(Live))
            .init();
    } else {
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(terminal)
            .with_target(false)
            .with_filter(filter)
            .with_filter(not_progress);
        let mail = mail.map(archgate_service::MailLayer::new);
        registry.with(logs).with(live.map(Live)).with(mail).init();
    }
}

/// Every progress event of a run (bytes read or sent, registry answers)
/// is progress for the service's `/live`.
struct Live(std::sync::Arc<archgate_service::Metrics>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Live {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == archgate_native::progress::TARGET {
            self.0.progress();
        }
    }
}

/// What the runner is handed from this process's environment, once.
fn env() -> Env {
    Env {
        cache_dir: archgate_native::default_cache_dir(),
        temp_root: std::env::temp_dir(),
        clock: Env::system_clock(),
    }
}

/// The one async runtime of a command.
fn runtime() -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            RunError::new(
                ErrorKind::Internal,
                format!("cannot start the async runtime: {e}"),
            )
        })
}

/// A run's spec from the configuration, the runtime, and a runner; or the
/// exit code of what went wrong (already reported).
fn setup(
    config: &Path,
    opts: &Options,
) -> Result<(archgate_runner::RunSpec, tokio::runtime::Runtime, Runner), u8> {
    let spec = config::load(config)
        .and_then(|l| l.run_spec(opts))
        .map_err(|e| fail(&config_error(e)))?;
    let rt = runtime().map_err(|e| fail(&e))?;
    Ok((spec, rt, Runner::new(env())))
}

fn config_error(e: config::ConfigError) -> RunError {
    RunError::new(ErrorKind::Config, e.0)
}

fn run_and_report(args: &RunArgs, dry_run: bool, report_file: Option<&Path>) -> u8 {
    let opts = Options {
        compose: args.compose.clone(),
        policy: args.policy,
        dry_run,
        allow_older: args.allow_older,
        verify_only: false,
        build: args.build_id.clone(),
        // Decrypted while the run reads the compose (scrypt: about 0.1 s).
        defer_key: true,
    };
    let (spec, rt, runner) = match setup(&args.config.config, &opts) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // SIGTERM or SIGINT: the run stops where it is (dropping it removes its
    // temp dir and stops the tools), nothing more is written, and the exit
    // code says which signal (143, 130).
    let outcome = rt.block_on(async {
        // Without signal handlers (they could not be installed), only the run ends it.
        let signal = async {
            match stop_signal() {
                Ok(signal) => signal.await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            report = runner.run(&spec) => Ok(report),
            stopped = signal => Err(stopped),
        }
    });
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => return fail(&e),
        Err((name, code)) => {
            // The runtime goes with its blocking tasks before the exit; a
            // reader still writing into the spool when the run was dropped
            // may have kept its temp dir from going: it goes now.
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
            let own = format!("archgate-run-{}-", std::process::id());
            if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&own) {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
            eprintln!("archgate: stopped by {name}; nothing more was written");
            return code;
        }
    };
    if let Some(path) = report_file {
        if let Err(e) = write_report(path, &report) {
            eprintln!("archgate: {}: cannot write the report: {e}", path.display());
            return 1;
        }
    }
    let out = match args.format {
        ReportFormat::Json => {
            serde_json::to_string_pretty(&report).expect("a report always serializes") + "\n"
        }
        ReportFormat::Text => report.to_text(),
        ReportFormat::Markdown => report.to_markdown(),
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    report.exit_code() as u8
}

/// SIGTERM or SIGINT, once it comes: its name and the exit code it stands
/// for (143, 130). The handlers are installed at once (in a runtime).
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = (&'static str, u8)>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => ("SIGTERM", 143u8),
            _ = int.recv() => ("SIGINT", 130u8),
        }
    })
}

/// `archgate consume`: until SIGTERM or SIGINT, then the current runs
/// finish and are acknowledged, and the exit code is 0. A second signal
/// exits at once (143 or 130). Both are watched from the start: while
/// connecting and checking the broker too.
fn consume(config: &Path, metrics: std::sync::Arc<archgate_service::Metrics>) -> u8 {
    let (service, template) = match config::load(config).and_then(|l| l.consume_spec()) {
        Ok(s) => s,
        Err(e) => return fail(&config_error(e)),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    let runner = std::sync::Arc::new(Runner::new(env()));
    let result = rt.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut signals = stop_signals()?;
        tokio::spawn(async move {
            let Some((name, _)) = signals.recv().await else {
                return;
            };
            tracing::info!("{name}: stopping (a second SIGTERM or SIGINT exits at once)");
            let _ = stop.send(true);
            // A second signal: out at once, the messages left to the broker
            // (it takes back what was not acknowledged).
            if let Some((name, code)) = signals.recv().await {
                eprintln!("archgate: {name} again: exiting at once; the broker takes the current messages back");
                std::process::exit(i32::from(code));
            }
        });
        archgate_service::consume(runner, template, service, metrics, stopped).await
    });
    // A check stuck on a hung mount is a blocking thread that may never
    // end: the process does not wait for it.
    rt.shutdown_background();
    service_exit(result)
}

/// The exit code of a service command: 2 for a permission the broker
/// refuses (or, with passive declares, a queue that is not there; nothing
/// was taken), 1 for other errors.
fn service_exit(result: anyhow::Result<()>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<archgate_service::Refused>().is_some() => {
            eprintln!("archgate: {e:#}");
            2
        }
        Err(e) => {
            eprintln!("archgate: {e:#}");
            1
        }
    }
}

/// Every SIGTERM and SIGINT, as they come: its name and the exit code it
/// stands for. The handlers are installed at once.
fn stop_signals() -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<(&'static str, u8)>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let got = tokio::select! {
                _ = term.recv() => ("SIGTERM", 143u8),
                _ = int.recv() => ("SIGINT", 130u8),
            };
            if tx.send(got).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// `archgate replay`: what QUEUE.failed holds, listed or moved back.
fn replay(config: &Path, composes: Vec<String>, list: bool) -> u8 {
    let (service, _) = match config::load(config).and_then(|l| l.consume_spec()) {
        Ok(s) => s,
        Err(e) => return fail(&config_error(e)),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    let opts = archgate_service::ReplayOptions { composes, list };
    let result = rt.block_on(archgate_service::replay(&service, &opts));
    let found = match result {
        Ok(found) => found,
        Err(e) => return service_exit(Err(e)),
    };
    for m in &found {
        let what = if m.replayed { "replayed" } else { "kept" };
        println!("{what}\t{}\t{}", m.compose, m.reason);
    }
    let moved = found.iter().filter(|m| m.replayed).count();
    eprintln!(
        "archgate: {} message(s) in {}; {moved} moved back to {}",
        found.len(),
        service.failed_queue(),
        service.queue.name
    );
    0
}

fn status(config: &Path, compose: Option<String>, format: Format) -> u8 {
    let opts = Options {
        compose,
        verify_only: true,
        ..Options::default()
    };
    let (spec, rt, runner) = match setup(config, &opts) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let status = match rt.block_on(status::status(&runner, &spec)) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let out = match format {
        Format::Json => {
            serde_json::to_string_pretty(&status).expect("a status always serializes") + "\n"
        }
        Format::Text => status.to_text(),
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    status.exit_code()
}

/// `archgate.1`, and `archgate-COMMAND.1` for each command, from the same
/// clap definitions as `--help`.
fn manpages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut pages = vec![("archgate".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let name = format!("archgate-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .bin_name(name.replace('-', " "));
        pages.push((name, page));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page.version(VERSION)).render(&mut out)?;
        std::fs::write(dir.join(format!("{name}.1")), out)?;
    }
    Ok(())
}

fn write_report(path: &Path, report: &Report) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(report)?;
    bytes.push(b'\n');
    archgate_native::write_atomic(path, &bytes)
}

fn fail(e: &RunError) -> u8 {
    eprintln!("archgate: {e}");
    e.exit_code()
}

fn plugin_check(
    library: &Path,
    location: Option<String>,
    settings: &str,
    images: Vec<String>,
) -> u8 {
    use archgate_core::{ImageQuery, Outcome, Source};
    let settings: serde_json::Value = match serde_json::from_str(settings) {
        Ok(v) => v,
        Err(e) => {
            return fail(&RunError::new(
                ErrorKind::Config,
                format!("--settings is not JSON: {e}"),
            ))
        }
    };
    let plugin = match archgate_source_plugin::PluginSource::load(library, location, settings) {
        Ok(p) => p,
        Err(e) => return fail(&RunError::new(ErrorKind::InvalidInput, e.0)),
    };
    println!(
        "plugin {}\nname: {}\nABI version: {}",
        library.display(),
        plugin.name(),
        plugin.abi_version()
    );
    let images = if images.is_empty() {
        vec!["fedora".to_string()]
    } else {
        images
    };
    let queries: Vec<ImageQuery> = images
        .iter()
        .map(|n| ImageQuery {
            name: n.clone(),
            matcher: Default::default(),
        })
        .collect();
    match plugin.load(&queries) {
        Ok(results) => {
            println!(
                "compose: {} ({})",
                results.compose.id, results.compose.status
            );
            for (image, list) in &results.images {
                let arches: Vec<String> = list
                    .iter()
                    .map(|r| match &r.outcome {
                        Outcome::Built(_) => format!("{} built", r.arch),
                        Outcome::Failed { .. } => format!("{} failed", r.arch),
                    })
                    .collect();
                println!(
                    "image {image}: {}",
                    if arches.is_empty() {
                        "no results".to_string()
                    } else {
                        arches.join(", ")
                    }
                );
            }
            0
        }
        Err(e) => fail(&RunError::new(ErrorKind::InvalidInput, e.0)),
    }
}

//! `archgate`: plan and publish multi-arch indexes from a compose.

mod config;
mod inspect;
mod pipeline;
mod status;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use archgate_core::{Policy, Report};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::pipeline::{Options, RunError};

#[derive(Parser)]
#[command(
    name = "archgate",
    version,
    about = "Publish multi-arch container indexes from a compose without silently dropping an arch"
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug). ARCHGATE_LOG takes a tracing filter.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
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
        /// The configuration file.
        #[arg(
            short = 'c',
            long = "config",
            value_name = "FILE",
            default_value = "archgate.toml"
        )]
        config: PathBuf,
        /// The compose whose tags are looked at, overriding [source] location.
        #[arg(long, value_name = "LOCATION")]
        compose: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Source plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
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

#[derive(Args)]
struct RunArgs {
    /// The configuration file.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "archgate.toml"
    )]
    config: PathBuf,
    /// The compose to read, overriding [source] location: a path, a URL, or a Koji task id.
    #[arg(long, value_name = "LOCATION")]
    compose: Option<String>,
    /// Override the gate policy of every image.
    #[arg(long, value_parser = parse_policy)]
    policy: Option<Policy>,
    /// How to print the report on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
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
        } => status(&config, compose, format),
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
            Err(e) => fail(&RunError::Config(e.0)),
        },
    };
    ExitCode::from(code)
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARCHGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn run_and_report(args: &RunArgs, dry_run: bool, report_file: Option<&Path>) -> u8 {
    let loaded = match config::load(&args.config) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&RunError::Config(e.0)),
    };
    let opts = Options {
        compose: args.compose.clone(),
        policy: args.policy,
        dry_run,
        cache: archgate_native::cache::default_dir(),
    };
    let report = match pipeline::run(&loaded, &opts) {
        Ok(report) => report,
        Err(e) => return fail(&e),
    };
    if let Some(path) = report_file {
        if let Err(e) = write_report(path, &report) {
            eprintln!("archgate: {}: cannot write the report: {e}", path.display());
            return 1;
        }
    }
    let out = match args.format {
        Format::Json => {
            serde_json::to_string_pretty(&report).expect("a report always serializes") + "\n"
        }
        Format::Text => report.to_text(),
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    report.exit_code() as u8
}

fn status(config: &Path, compose: Option<String>, format: Format) -> u8 {
    let loaded = match config::load(config) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&RunError::Config(e.0)),
    };
    let opts = Options {
        compose,
        ..Options::default()
    };
    let status = match status::status(&loaded, &opts) {
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

fn write_report(path: &Path, report: &Report) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(report)?;
    bytes.push(b'\n');
    archgate_native::layout::write_atomic(path, &bytes)
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
        Err(e) => return fail(&RunError::Config(format!("--settings is not JSON: {e}"))),
    };
    let plugin = match archgate_source_plugin::PluginSource::load(library, location, settings) {
        Ok(p) => p,
        Err(e) => return fail(&RunError::Input(e.0)),
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
        Err(e) => fail(&RunError::Input(e.0)),
    }
}

//! `twinlog`: the command line. Thin glue over the library crates.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use twinlog::Twinlog;
use twinlog_auditlog::AuditLog;
use twinlog_normalize::{normalize, IngestContext};
use twinlog_projections::Day;
use twinlog_proto::v1::{ingest_event::Kind, ClockTick, Envelope, IngestEvent, Source, Unknown};

/// Files read by `append` at once; bounded so a huge glob cannot exhaust memory.
const APPEND_FILES_PER_BATCH_MAX: usize = 1_000;
/// Records below which no progress bar is drawn.
const PROGRESS_RECORDS_MIN: u64 = 50_000;

#[derive(Parser)]
#[command(
    name = "twinlog",
    version,
    about = "One auditable record of a WhatsApp Business number used from the app and the Cloud API at once",
    long_about = "twinlog folds Meta's WhatsApp Business webhooks (messages, smb_message_echoes, history, \
smb_app_state_sync, account_update) and Cloud API sends into an append-only, tamper-evident audit log: \
an RFC 6962 Merkle tree with signed C2SP checkpoints, personal content encrypted per customer.\n\n\
Start with:  twinlog up --app-secret SECRET --verify-token TOKEN   (webhooks on http://127.0.0.1:8080/webhook)\n\
Offline:     twinlog append --log ./twinlog-data webhook.json && twinlog verify --log ./twinlog-data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter, e.g. `info` or `twinlog=debug` (also RUST_LOG).
    #[arg(long, global = true, env = "TWINLOG_LOG_LEVEL", default_value = "warn")]
    log_level: String,
}

#[derive(clap::Args, Clone)]
struct LogArg {
    /// The audit log directory.
    #[arg(
        long = "log",
        env = "TWINLOG_DIR",
        default_value = "twinlog-data",
        value_name = "DIR"
    )]
    dir: PathBuf,
}

/// Settings shared by the long-running services. Each flag overrides the
/// config file and the `TWINLOG_*` environment variable of the same name.
#[derive(clap::Args, Clone, Debug, Default)]
struct ServiceArgs {
    /// A TOML config file (keys as in `deploy/twinlog.example.toml`).
    #[arg(long, env = "TWINLOG_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory: embedded bus, raw-body store, audit shards [default: twinlog-data]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Kafka bootstrap servers; without it the embedded bus is used.
    #[arg(long, value_name = "BROKERS")]
    kafka: Option<String>,
    /// Topic name prefix [default: twinlog.]
    #[arg(long, value_name = "PREFIX")]
    topic_prefix: Option<String>,
    /// Partitions of a new embedded bus [default: 1]
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    /// Partitions (audit shards) this engine folds, e.g. `0,2` [default: all]
    #[arg(long, value_name = "P,..", value_delimiter = ',')]
    shards: Option<Vec<u32>>,
    /// Meta app secret; repeat for several apps.
    #[arg(long = "app-secret", value_name = "SECRET")]
    app_secrets: Option<Vec<String>>,
    /// The verify token of Meta's webhook handshake.
    #[arg(long, value_name = "TOKEN")]
    verify_token: Option<String>,
    /// Graph API base URL for the send gateway, e.g. https://graph.facebook.com/v24.0 (off when empty).
    #[arg(long = "graph-url", value_name = "URL")]
    graph_base_url: Option<String>,
    /// Graph API access token for the send gateway.
    #[arg(long, value_name = "TOKEN")]
    access_token: Option<String>,
    /// Sends per second per business number [default: 20]
    #[arg(long, value_name = "N")]
    number_rate_per_s: Option<u32>,
    /// Wall-clock interval of the engine's clock ticks, 0 = off [default: 60000]
    #[arg(long, value_name = "MS")]
    tick_interval_ms: Option<u64>,
    /// Kafka engines: the master key file (64 hex digits, mode 0600; `twinlog master-key new FILE`)
    /// that wraps each shard's keys on the keys topic, so another engine can restore the shard.
    /// Every engine needs the same one. Also TWINLOG_MASTER_KEY_FILE.
    #[arg(long, value_name = "FILE")]
    master_key_file: Option<PathBuf>,
    /// A bearer token of the query API: SECRET (16+ characters) or SECRET@PN1,PN2 to limit it
    /// to some numbers; repeat for several. Prefer TWINLOG_API_TOKENS='["..."]' to the command line.
    #[arg(long = "api-token", value_name = "TOKEN")]
    api_tokens: Option<Vec<String>>,
    /// The billing ledger's rate card, CSV (see projections/ratecards/example.csv).
    #[arg(long, value_name = "CSV")]
    rate_card: Option<PathBuf>,
}

impl ServiceArgs {
    fn settings(&self) -> Result<twinlog::config::Settings> {
        use figment::value::Value;
        let mut flags = std::collections::BTreeMap::<String, Value>::new();
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                flags.insert(k.to_owned(), v);
            }
        };
        set(
            "data_dir",
            self.data
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned().into()),
        );
        set("listen", self.listen.clone().map(Value::from));
        set("kafka", self.kafka.clone().map(Value::from));
        set("topic_prefix", self.topic_prefix.clone().map(Value::from));
        set("partitions", self.partitions.map(Value::from));
        set("shards", self.shards.clone().map(Value::from));
        set("app_secrets", self.app_secrets.clone().map(Value::from));
        set("verify_token", self.verify_token.clone().map(Value::from));
        set(
            "graph_base_url",
            self.graph_base_url.clone().map(Value::from),
        );
        set("access_token", self.access_token.clone().map(Value::from));
        set("number_rate_per_s", self.number_rate_per_s.map(Value::from));
        set("tick_interval_ms", self.tick_interval_ms.map(Value::from));
        set(
            "master_key_file",
            self.master_key_file
                .as_ref()
                .map(|f| f.to_string_lossy().into_owned().into()),
        );
        set("api_tokens", self.api_tokens.clone().map(Value::from));
        set(
            "rate_card",
            self.rate_card
                .as_ref()
                .map(|f| f.to_string_lossy().into_owned().into()),
        );
        twinlog::config::Settings::load(self.config.as_deref(), &flags)
            .context("fix the setting named above in the config file, the TWINLOG_* environment or the flags")
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: webhook ingestor, send gateway, engine, the CRM views
    /// and billing ledger with their query API (/v1, bearer tokens), metrics and health, on
    /// the embedded bus (or on Kafka with --kafka).
    Up {
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Run the webhook ingestor (and the send gateway, when --graph-url is set) alone.
    Ingest {
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Run the engine alone: fold the input topics into the audit shards.
    Engine {
        #[command(flatten)]
        service: ServiceArgs,
        /// Fold everything the bus holds now, then exit (no clock ticks).
        #[arg(long)]
        drain: bool,
    },
    /// Run the projection worker and the query API alone: fold the audit topic into the
    /// CRM views and the billing ledger (DATA/views) and serve them under /v1 (bearer tokens).
    Project {
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Post seeded, realistic, signed webhook traffic (and API sends) to a running twinlog,
    /// then print what was sent and what the audit log must hold, as JSON.
    Simulate {
        /// The webhook URL, e.g. http://127.0.0.1:8080/webhook
        #[arg(long, value_name = "URL")]
        url: String,
        /// The send gateway's base URL (e.g. http://127.0.0.1:8080): bot and
        /// campaign messages go through it instead of being simulated. Only
        /// against a gateway whose Graph URL is a simulator: a gateway on the
        /// real Graph API sends real WhatsApp messages.
        #[arg(long, value_name = "URL")]
        gateway: Option<String>,
        /// The app secret that signs the bodies.
        #[arg(long, env = "TWINLOG_SIMULATE_APP_SECRET", value_name = "SECRET")]
        app_secret: String,
        /// A Graph API simulator's base URL: simulate tells it which customers
        /// write, so that it accepts the bot's free-form replies as Meta would.
        #[arg(long, value_name = "URL", requires = "gateway")]
        meta_url: Option<String>,
        /// The seed: the same seed and sizes send the same bytes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Business numbers.
        #[arg(long, default_value_t = 4)]
        numbers: u32,
        /// Customers per number.
        #[arg(long, default_value_t = 50)]
        customers: u32,
        /// Events to generate (approximately; the report says exactly).
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// Meta timestamps start here, unix seconds [default: one day ago]
        #[arg(long, value_name = "SECONDS")]
        start: Option<i64>,
        /// Re-deliveries of an earlier body, per thousand.
        #[arg(long, default_value_t = 20)]
        duplicates_per_mille: u32,
        /// Bodies are shuffled within windows of this many deliveries.
        #[arg(long, default_value_t = 8)]
        reorder_window: u32,
        /// Group conversations (out of scope), per thousand.
        #[arg(long, default_value_t = 5)]
        groups_per_mille: u32,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Messages per second each number sends (Meta's coexistence limit is 20).
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// Print what would be sent and expected, and send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage the Kafka topics.
    Topics {
        #[command(subcommand)]
        topics: TopicsCommand,
    },
    /// Normalise the ingestor's dead letters again (after a parser fix) and publish what now parses.
    Reprocess {
        #[command(flatten)]
        service: ServiceArgs,
    },
    /// Create an empty audit log: its signing key and its key material.
    Init {
        #[command(flatten)]
        log: LogArg,
    },
    /// Fold webhook bodies from files into the log (creates the log if missing).
    Append {
        #[command(flatten)]
        log: LogArg,
        /// Webhook bodies, one JSON body per file; `-` reads one body from stdin.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The ingest time to stamp on every event, unix ms (default: now).
        #[arg(long, value_name = "MS")]
        ingest_time_ms: Option<i64>,
        /// Files folded per durable append (one fsync each).
        #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
        batch_files: u64,
    },
    /// Feed a clock tick: fires due timers (sync window, heartbeat).
    Tick {
        #[command(flatten)]
        log: LogArg,
        /// The time, unix seconds.
        #[arg(long, value_name = "SECONDS")]
        at: i64,
    },
    /// Normalise one webhook body and print one JSON object per event (JSON Lines).
    Normalize {
        /// The webhook body; `-` or nothing reads stdin.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// The ingest time to stamp, unix ms (default: now).
        #[arg(long, value_name = "MS")]
        ingest_time_ms: Option<i64>,
    },
    /// Print one record as JSON: clear part, decrypted content, outcome and leaf bytes.
    Show {
        #[command(flatten)]
        log: LogArg,
        /// The record's seq (its leaf index, from 0).
        #[arg(long)]
        seq: u64,
    },
    /// Rebuild the whole tree from the records and check every hash and checkpoint.
    Verify {
        #[command(flatten)]
        log: LogArg,
    },
    /// Print inclusion and consistency proofs as JSON (RFC 9162 terms, hex hashes).
    Proof {
        #[command(subcommand)]
        proof: ProofCommand,
    },
    /// Print the latest signed checkpoint (a C2SP signed note).
    Checkpoint {
        #[command(flatten)]
        log: LogArg,
        /// Print the C2SP verifier key instead (`<name>+<key hash>+<base64 key>`).
        #[arg(long)]
        verifier_key: bool,
    },
    /// Crypto-shred a customer by phone number or BSUID, and record the erasure.
    ///
    /// On Kafka (with --kafka and --master-key-file), --log is a shard directory DATA/shards/<p>:
    /// the shard is brought up to date from the topics first, and the key's tombstone and the
    /// erasure record are published. Stop the engine that owns the shard first.
    Forget {
        #[command(flatten)]
        log: LogArg,
        /// The customer's phone number (digits, with or without +) or BSUID.
        customer: String,
        /// Kafka bootstrap servers: publish the forget to the keys and audit topics.
        #[arg(
            long,
            env = "TWINLOG_KAFKA",
            value_name = "BROKERS",
            requires = "master_key_file"
        )]
        kafka: Option<String>,
        /// Topic name prefix.
        #[arg(long, env = "TWINLOG_TOPIC_PREFIX", default_value = twinlog_bus::DEFAULT_TOPIC_PREFIX)]
        topic_prefix: String,
        /// The engines' master key file.
        #[arg(long, env = "TWINLOG_MASTER_KEY_FILE", value_name = "FILE")]
        master_key_file: Option<PathBuf>,
    },
    /// Manage the master key that wraps the shards' keys on Kafka.
    MasterKey {
        #[command(subcommand)]
        command: MasterKeyCommand,
    },
    /// Whether WhatsApp Coexistence onboarding is supported for a business number's
    /// market on a day, from its calling code and a dated table of unsupported
    /// markets. Prints JSON; exits 1 when unsupported.
    Eligibility {
        /// The business number in international form (`+44 20 7946 0958`, `15551234567`).
        number: String,
        /// The day to answer for, YYYY-MM-DD [default: today, UTC].
        #[arg(long, value_name = "DATE")]
        on: Option<String>,
    },
    /// The billing ledger.
    Billing {
        #[command(subcommand)]
        command: BillingCommand,
    },
}

#[derive(Subcommand)]
enum BillingCommand {
    /// Compare the ledger's delivered API messages with Meta's estimate: a Graph API
    /// `pricing_analytics` response (daily, by country, pricing type and category).
    /// Prints one JSON line per (day, country, category) that differs, then a summary.
    /// Meta's figures are approximate until the invoice: see --tolerance-micros.
    Reconcile {
        #[command(flatten)]
        log: LogArg,
        /// Meta's `pricing_analytics` response, as JSON.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The rate card the ledger prices with (CSV; see projections/ratecards/example.csv).
        #[arg(long, value_name = "CSV")]
        rate_card: PathBuf,
        /// Cost differences up to this many micro-units count as agreement.
        #[arg(long, default_value_t = 0, value_name = "MICROS")]
        tolerance_micros: i64,
    },
}

#[derive(Subcommand)]
enum MasterKeyCommand {
    /// Write a new random master key to FILE (mode 0600; never overwrites) and print its id.
    New {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create the five input topics and the audit topic with N partitions each.
    Create {
        /// Kafka bootstrap servers.
        #[arg(long, env = "TWINLOG_KAFKA", value_name = "BROKERS")]
        kafka: String,
        /// Partitions per topic: the most engine processes that can share the work.
        #[arg(long, value_name = "N")]
        partitions: u32,
        /// Topic name prefix.
        #[arg(long, env = "TWINLOG_TOPIC_PREFIX", default_value = twinlog_bus::DEFAULT_TOPIC_PREFIX)]
        topic_prefix: String,
    },
}

#[derive(Subcommand)]
enum ProofCommand {
    /// Prove that record SEQ is in the tree.
    Inclusion {
        #[command(flatten)]
        log: LogArg,
        #[arg(long)]
        seq: u64,
        /// The tree size to prove against (default: the current size).
        #[arg(long)]
        tree_size: Option<u64>,
    },
    /// Prove that the tree of size FROM is a prefix of the tree of size TO.
    Consistency {
        #[command(flatten)]
        log: LogArg,
        #[arg(long)]
        from: u64,
        /// Default: the current size.
        #[arg(long)]
        to: Option<u64>,
    },
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli.command) {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::exit(1);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn bar(total: u64, what: &str) -> ProgressBar {
    if total < PROGRESS_RECORDS_MIN {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{bar:40}}] {{pos}}/{{len}} records ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn open(dir: &Path) -> Result<Twinlog> {
    let total = AuditLog::open(dir)
        .map(|l| l.size())
        .with_context(|| format!("failed to open the audit log at {}", dir.display()))?;
    let bar = bar(total, "loading");
    let t = Twinlog::open(dir, &mut |done, _| bar.set_position(done))
        .with_context(|| format!("failed to open the audit log at {}", dir.display()))?;
    bar.finish_and_clear();
    Ok(t)
}

fn read_body(path: &Path) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .take(u64::try_from(twinlog_normalize::WEBHOOK_BODY_BYTES_MAX).unwrap_or(u64::MAX) + 1)
            .read_to_end(&mut body)
            .context("failed to read the webhook body from stdin")?;
        return Ok(body);
    }
    std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))
}

/// Runs services until Ctrl-C or SIGTERM.
fn serve(service: &ServiceArgs, roles: twinlog::serve::Roles) -> Result<i32> {
    let settings = service.settings()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(t) => t,
                        Err(_) => {
                            let _ = ctrl_c.await;
                            let _ = tx.send(true);
                            return;
                        }
                    };
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            let _ = tx.send(true);
        });
        let mode = if settings.kafka.is_empty() {
            format!("embedded bus in {}", settings.bus_dir().display())
        } else {
            format!("Kafka at {}", settings.kafka)
        };
        let data = settings.data_dir.clone();
        twinlog::serve::serve(settings, roles, rx, move |addr| {
            // The one line scripts and tests wait for.
            println!(
                "twinlog listening on http://{addr} ({mode}; data in {})",
                data.display()
            );
        })
        .await
        .context("twinlog stopped")?;
        Ok(0)
    })
}

fn run(command: Command) -> Result<i32> {
    use twinlog::serve::Roles;
    match command {
        Command::Up { service } => serve(
            &service,
            Roles {
                ingest: true,
                engine: true,
                drain: false,
                project: true,
            },
        ),
        Command::Ingest { service } => serve(
            &service,
            Roles {
                ingest: true,
                engine: false,
                drain: false,
                project: false,
            },
        ),
        Command::Engine { service, drain } => serve(
            &service,
            Roles {
                ingest: false,
                engine: true,
                drain,
                project: false,
            },
        ),
        Command::Project { service } => serve(
            &service,
            Roles {
                ingest: false,
                engine: false,
                drain: false,
                project: true,
            },
        ),
        Command::Topics {
            topics:
                TopicsCommand::Create {
                    kafka,
                    partitions,
                    topic_prefix,
                },
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?;
            runtime
                .block_on(twinlog_bus::KafkaBus::create_topics(
                    &kafka,
                    &topic_prefix,
                    partitions,
                ))
                .with_context(|| {
                    format!("failed to create the topics {topic_prefix}* on {kafka}")
                })?;
            for topic in twinlog_bus::Topic::ALL {
                println!("{} ({partitions} partitions)", topic.name(&topic_prefix));
            }
            Ok(0)
        }
        Command::Reprocess { service } => reprocess(&service),
        Command::Simulate {
            url,
            gateway,
            app_secret,
            meta_url,
            seed,
            numbers,
            customers,
            events,
            start,
            duplicates_per_mille,
            reorder_window,
            groups_per_mille,
            concurrency,
            rate,
            dry_run,
        } => {
            let scenario = twinlog_simulate::Scenario {
                seed,
                numbers,
                customers_per_number: customers,
                events,
                start_unix_s: start.unwrap_or_else(|| now_ms() / 1000 - 86_400),
                duplicate_per_mille: duplicates_per_mille,
                reorder_window,
                group_per_mille: groups_per_mille,
                sends_via_gateway: gateway.is_some(),
            };
            scenario
                .validate()
                .context("fix the simulate flag named above")?;
            let traffic = twinlog_simulate::generate(&scenario);
            if dry_run {
                let out = serde_json::json!({ "scenario": scenario, "expected": traffic.expected });
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(0);
            }
            let target = twinlog_simulate::Target {
                webhook_url: url,
                gateway_url: gateway,
                app_secret,
                concurrency,
                number_rate_per_s: rate,
                meta_url,
            };
            let bar = ProgressBar::new(traffic.deliveries.len() as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "simulating [{bar:40}] {pos}/{len} deliveries ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?;
            let report = runtime
                .block_on(twinlog_simulate::run(&traffic, &target, &bar))
                .context("the simulation could not deliver its traffic")?;
            bar.finish_and_clear();
            let out = serde_json::json!({
                "scenario": scenario,
                "expected": traffic.expected,
                "run": report,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(if report.failed == 0 && report.sends_failed == 0 {
                0
            } else {
                1
            })
        }
        Command::Init { log } => {
            let t = Twinlog::init(&log.dir).with_context(|| {
                format!("failed to create an audit log at {}", log.dir.display())
            })?;
            println!(
                "created audit log {} at {}",
                t.log().origin(),
                log.dir.display()
            );
            println!("verifier key: {}", t.log().verifier_key());
            Ok(0)
        }
        Command::Append {
            log,
            files,
            ingest_time_ms,
            batch_files,
        } => append(
            &log.dir,
            &files,
            ingest_time_ms.unwrap_or_else(now_ms),
            batch_files,
        ),
        Command::Tick { log, at } => {
            let mut t = open(&log.dir)?;
            let event = IngestEvent {
                envelope: Some(Envelope {
                    ingest_time_ms: at.saturating_mul(1000),
                    ..Envelope::default()
                }),
                kind: Some(Kind::Tick(ClockTick {
                    now_ms: at.saturating_mul(1000),
                })),
            };
            let source = Source {
                topic: "cli".into(),
                partition: 0,
                offset: 0,
            };
            let report = t.append(&[(event, source)])?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(0)
        }
        Command::Normalize {
            file,
            ingest_time_ms,
        } => {
            let path = file.unwrap_or_else(|| PathBuf::from("-"));
            let body = read_body(&path)?;
            let events = normalize(
                &body,
                &IngestContext {
                    ingest_time_ms: ingest_time_ms.unwrap_or_else(now_ms),
                },
            )
            .with_context(|| {
                format!("{} is not a webhook body twinlog can read", path.display())
            })?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for event in events {
                serde_json::to_writer(&mut out, &event)?;
                out.write_all(b"\n")?;
            }
            Ok(0)
        }
        Command::Show { log, seq } => {
            let t = open(&log.dir)?;
            let view = t.show(seq).with_context(|| {
                format!(
                    "failed to show record {seq}; the log has {} records",
                    t.log().size()
                )
            })?;
            println!("{}", serde_json::to_string_pretty(&view)?);
            Ok(0)
        }
        Command::Verify { log } => {
            let logs = log_dirs(&log.dir)?;
            let mut code = 0;
            for dir in &logs {
                let l = AuditLog::open(dir).with_context(|| {
                    format!("failed to open the audit log at {}", dir.display())
                })?;
                let bar = bar(l.size(), "verifying");
                let result = l.verify(&mut |done, _| bar.set_position(done));
                bar.finish_and_clear();
                let name = if logs.len() > 1 {
                    format!("{}: ", dir.display())
                } else {
                    String::new()
                };
                match result {
                    Ok(report) => println!(
                        "{name}ok: {} records, root {}, {} checkpoints checked",
                        report.tree_size,
                        hex::encode(report.root),
                        report.checkpoints_checked
                    ),
                    Err(error) => {
                        eprintln!("{name}verification failed: {error}");
                        code = 2;
                    }
                }
            }
            Ok(code)
        }
        Command::Eligibility { number, on } => {
            let day = match on {
                Some(text) => text.parse::<Day>().map_err(|e| {
                    anyhow::anyhow!("--on {text:?} is not a date: {e} (write YYYY-MM-DD)")
                })?,
                None => Day::of_unix(now_ms() / 1000),
            };
            let answer = twinlog_projections::eligibility(&number, day).with_context(|| {
                format!("cannot tell the market of {number:?}: give the number in international form, e.g. +44 20 7946 0958")
            })?;
            let json = serde_json::json!({
                "number": number,
                "on": day.to_string(),
                "country": answer.country,
                "supported": answer.supported,
                "rule_since": answer.rule_since.map(|d| d.to_string()),
                "note": answer.note,
            });
            println!("{json}");
            Ok(if answer.supported { 0 } else { 1 })
        }
        Command::Billing {
            command:
                BillingCommand::Reconcile {
                    log,
                    file,
                    rate_card,
                    tolerance_micros,
                },
        } => billing_reconcile(&log.dir, &file, &rate_card, tolerance_micros),
        Command::Proof { proof } => {
            let json = match proof {
                ProofCommand::Inclusion {
                    log,
                    seq,
                    tree_size,
                } => {
                    let l = AuditLog::open(&log.dir)?;
                    let size = tree_size.unwrap_or(l.size());
                    serde_json::to_string_pretty(&l.prove_inclusion(seq, size)?)?
                }
                ProofCommand::Consistency { log, from, to } => {
                    let l = AuditLog::open(&log.dir)?;
                    let to = to.unwrap_or(l.size());
                    serde_json::to_string_pretty(&l.prove_consistency(from, to)?)?
                }
            };
            println!("{json}");
            Ok(0)
        }
        Command::Checkpoint { log, verifier_key } => {
            let l = AuditLog::open(&log.dir).with_context(|| {
                format!("failed to open the audit log at {}", log.dir.display())
            })?;
            if verifier_key {
                println!("{}", l.verifier_key());
            } else {
                std::io::stdout().write_all(&l.checkpoint()?)?;
            }
            Ok(0)
        }
        Command::Forget {
            log,
            customer,
            kafka: Some(kafka),
            topic_prefix,
            master_key_file: Some(master_key_file),
        } => forget_on_kafka(&log.dir, &customer, &kafka, &topic_prefix, &master_key_file),
        Command::Forget { log, customer, .. } => {
            let mut t = open(&log.dir)?;
            print_forget(t.forget(&customer)?);
            Ok(0)
        }
        Command::MasterKey {
            command: MasterKeyCommand::New { file },
        } => {
            let key = twinlog_vault::MasterKey::generate(&file)
                .context("failed to write a new master key")?;
            println!("master key {} written to {}", key.id(), file.display());
            Ok(0)
        }
    }
}

fn print_forget(outcome: Option<u64>) {
    match outcome {
        Some(seq) => println!("forgotten; erasure recorded at seq {seq}"),
        None => println!("already forgotten; nothing to do"),
    }
}

/// Forgets a customer of shard `DIR` (`DATA/shards/<p>`) on Kafka: brings
/// the shard up to date from the topics, forgets, then publishes the key's
/// tombstone to the keys topic and the erasure record to the audit topic,
/// in one transaction of the shard's producer (which fences an engine that
/// still owns the shard: run it while none does).
fn forget_on_kafka(
    dir: &Path,
    customer: &str,
    kafka: &str,
    prefix: &str,
    master_key_file: &Path,
) -> Result<i32> {
    let partition: u32 = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .with_context(|| {
            format!(
                "{} is not a shard directory DATA/shards/<partition>",
                dir.display()
            )
        })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let bus = twinlog_bus::KafkaBus::connect(kafka, prefix).await?;
        let escrow = std::sync::Arc::new(
            twinlog::escrow::Escrow::connect(kafka, prefix, master_key_file).await?,
        );
        // The shard's transactional producer: fences an engine that still
        // publishes this shard (a forget runs while no engine owns it).
        let producer =
            std::sync::Arc::new(twinlog_bus::ShardProducer::init(kafka, prefix, partition).await?);
        let mut shard = twinlog::restore::open_shard(&bus, &escrow, dir, partition, true, None)
            .await?
            .with_producer(producer);
        // What the shard owes the topics, before the forget.
        shard.publish(&bus).await?;
        let outcome = shard.forget(customer)?;
        shard.publish(&bus).await?;
        drop(shard);
        print_forget(outcome);
        bus.close(Duration::from_secs(10)).await;
        if let Ok(escrow) = std::sync::Arc::try_unwrap(escrow) {
            escrow.close(Duration::from_secs(10)).await;
        }
        Ok(0)
    })
}

/// Replays the ingestor's dead letters onto the bus.
fn reprocess(service: &ServiceArgs) -> Result<i32> {
    let settings = service.settings()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let config = twinlog_ingest::IngestConfig {
            app_secrets: settings.app_secrets.clone(),
            verify_token: settings.verify_token.clone(),
            raw_retention_ms: i64::from(settings.raw_retention_days) * 86_400_000,
            ..twinlog_ingest::IngestConfig::default()
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let dir = settings.ingest_dir();
        let report = if settings.kafka.is_empty() {
            let bus = twinlog_bus::EmbeddedBus::open(
                settings.bus_dir(),
                twinlog_bus::EmbeddedConfig {
                    partitions: settings.partitions,
                    prefix: settings.topic_prefix.clone(),
                },
            )
            .context("failed to open the embedded bus; is `twinlog up` still running on this data directory?")?;
            let ingestor = twinlog_ingest::Ingestor::open(&dir, config, std::sync::Arc::new(bus), &mut registry)?;
            ingestor.reprocess().await?
        } else {
            let bus = twinlog_bus::KafkaBus::connect(&settings.kafka, &settings.topic_prefix).await?;
            let ingestor = twinlog_ingest::Ingestor::open(&dir, config, std::sync::Arc::new(bus), &mut registry)?;
            ingestor.reprocess().await?
        };
        println!("{report:?}");
        Ok(0)
    })
}

/// Folds files into the log. A body that cannot be normalised is reported,
/// counted, and recorded as evidence (its hash, never its content); the
/// command then exits 1 after folding the rest.
fn append(dir: &Path, files: &[PathBuf], ingest_time_ms: i64, batch_files: u64) -> Result<i32> {
    let batch_files = usize::try_from(batch_files).unwrap_or(APPEND_FILES_PER_BATCH_MAX);
    let mut t = if dir.join("log.json").exists() {
        open(dir)?
    } else {
        Twinlog::init(dir)
            .with_context(|| format!("failed to create an audit log at {}", dir.display()))?
    };
    let mut failed = 0u64;
    let mut total = twinlog::AppendReport::default();
    let mut offset = 0i64;
    let bar = if files.len() > 100 {
        let bar = ProgressBar::new(files.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("appending [{bar:40}] {pos}/{len} files ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    for chunk in files.chunks(batch_files.clamp(1, APPEND_FILES_PER_BATCH_MAX)) {
        let mut inputs = Vec::new();
        for path in chunk {
            let body = read_body(path)?;
            let source = |offset: i64| Source {
                topic: "cli".into(),
                partition: 0,
                offset,
            };
            match normalize(&body, &IngestContext { ingest_time_ms }) {
                Ok(events) => {
                    for event in events {
                        inputs.push((event, source(offset)));
                        offset += 1;
                    }
                }
                Err(error) => {
                    failed += 1;
                    eprintln!(
                        "error: {} is not a webhook body twinlog can read: {error}",
                        path.display()
                    );
                    let sha = <sha2::Sha256 as sha2::Digest>::digest(&body);
                    let event = IngestEvent {
                        envelope: Some(Envelope {
                            ingest_time_ms,
                            body_sha256: sha.to_vec(),
                            ..Envelope::default()
                        }),
                        kind: Some(Kind::Unknown(Unknown {
                            field: String::new(),
                            reason: format!("unparsable: {error}"),
                            raw_json: String::new(),
                        })),
                    };
                    inputs.push((event, source(offset)));
                    offset += 1;
                }
            }
            bar.inc(1);
        }
        let report = t.append(&inputs)?;
        total.inputs += report.inputs;
        total.appended += report.appended;
        total.duplicates += report.duplicates;
        total.rejected += report.rejected;
        total.idle += report.idle;
        total.records += report.records;
        total.tree_size = report.tree_size;
        total.root = report.root;
        for (k, v) in report.rejections {
            *total.rejections.entry(k).or_default() += v;
        }
    }
    bar.finish_and_clear();
    println!("{}", serde_json::to_string(&total)?);
    if failed > 0 {
        bail!("{failed} file(s) could not be normalised; their hashes were recorded, fix the input and append them again");
    }
    Ok(0)
}

/// The audit logs under `dir`: a services data directory holds one per shard
/// (`DIR/shards/<partition>`, in partition order); otherwise `dir` is one log.
fn log_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let shards = dir.join("shards");
    if dir.join("log.json").exists() || !shards.is_dir() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir(&shards)
        .with_context(|| format!("failed to list {}", shards.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect();
    dirs.sort();
    Ok(dirs.into_iter().map(|(_, d)| d).collect())
}

/// `twinlog billing reconcile`: folds every shard's records into the
/// billing views (clear parts only: billing needs no key), adds the shards'
/// daily country totals, and compares them with Meta's.
fn billing_reconcile(dir: &Path, file: &Path, rate_card: &Path, tolerance: i64) -> Result<i32> {
    let card_text = std::fs::read_to_string(rate_card)
        .with_context(|| format!("failed to read the rate card {}", rate_card.display()))?;
    let card = twinlog_projections::RateCard::parse(&card_text)
        .with_context(|| format!("the rate card {} is not valid", rate_card.display()))?;
    let meta_text = std::fs::read_to_string(file)
        .with_context(|| format!("failed to read {}", file.display()))?;
    let meta = twinlog_projections::parse_pricing_analytics(&meta_text).with_context(|| {
        format!(
            "{} is not a pricing_analytics response (GET /<WABA_ID>?fields=pricing_analytics...)",
            file.display()
        )
    })?;
    let config = twinlog_projections::Config::new(card);
    let mut totals = twinlog_projections::LedgerTotals::new();
    for dir in log_dirs(dir)? {
        let log = AuditLog::open(&dir)
            .with_context(|| format!("failed to open the audit log at {}", dir.display()))?;
        let bar = bar(log.size(), "folding the ledger");
        let mut views = twinlog_projections::Views::default();
        for item in log.records(0, log.size()) {
            let (seq, bytes) = item?;
            let record = twinlog::pipeline::decode(seq, &bytes)?;
            views.apply(
                &config,
                twinlog_projections::ProjectionInput {
                    record: &record,
                    personal: None,
                },
            );
            bar.set_position(seq + 1);
        }
        bar.finish_and_clear();
        twinlog_projections::add_totals(&mut totals, views.country_totals());
    }
    let lines = twinlog_projections::reconcile_totals(&totals, &meta, tolerance);
    let mut out = std::io::stdout().lock();
    for d in &lines {
        let json = serde_json::json!({
            "day": d.day.to_string(),
            "country": d.country,
            "category": d.category,
            "ledger_volume": d.ledger_volume,
            "meta_volume": d.meta_volume,
            "ledger_micros": d.ledger_micros,
            "meta_micros": d.meta_micros,
            "difference_micros": d.cost_difference_micros(),
        });
        writeln!(out, "{json}")?;
    }
    let summary = serde_json::json!({
        "days_compared": meta.keys().map(|k| k.0).collect::<std::collections::BTreeSet<_>>().len(),
        "lines_compared": meta.len(),
        "discrepancies": lines.len(),
        "tolerance_micros": tolerance,
    });
    writeln!(out, "{summary}")?;
    Ok(0)
}

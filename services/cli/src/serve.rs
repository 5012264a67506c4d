//! The long-running services: the ingestor, the send gateway and the engine
//! runner, together (`twinlog up`) or alone (`twinlog ingest`, `twinlog
//! engine`), on the embedded bus or on Kafka. One HTTP listener serves the
//! webhook, the gateway, `/metrics`, `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use tokio::sync::watch;

use twinlog_bus::{
    Bus, EmbeddedBus, EmbeddedConfig, GroupEvent, KafkaBus, Membership, ShardProducer,
};

use crate::config::Settings;
use crate::escrow::Escrow;
use crate::restore::open_shard;
use crate::runner::{run_shard, RunConfig, RunnerError, RunnerMetrics, Shard};

/// How long a new owner retries opening a shard whose previous owner is
/// still letting go of it.
pub const SHARD_OPEN_WAIT_MS_MAX: u64 = 60_000;

/// Which services a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    pub ingest: bool,
    pub engine: bool,
    /// Engine only: fold what the bus holds, then exit.
    pub drain: bool,
    /// The projection worker and the query API (`/v1/...`).
    pub project: bool,
}

/// How long shutdown waits for in-flight work.
pub const SHUTDOWN_WAIT_MS: u64 = 10_000;
/// Interval of the raw-body retention purge.
pub const PURGE_INTERVAL_MS: u64 = 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to open the view store at {path} (is another twinlog using it?)")]
    Views {
        path: std::path::PathBuf,
        #[source]
        source: twinlog_query::StoreError,
    },
    #[error("failed to read the rate card {path}: {detail}")]
    RateCard {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("the projection worker stopped")]
    Project(#[source] twinlog_query::ProjectorError),
    #[error("failed to open the embedded bus at {path}")]
    EmbeddedBus {
        path: std::path::PathBuf,
        #[source]
        source: twinlog_bus::BusError,
    },
    #[error("failed to connect to Kafka at {bootstrap}")]
    Kafka {
        bootstrap: String,
        #[source]
        source: twinlog_bus::BusError,
    },
    #[error("failed to start the ingestor")]
    Ingest(#[source] twinlog_ingest::IngestError),
    #[error("failed to start the send gateway")]
    Gateway(#[source] twinlog_gateway::GatewayError),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error("failed to listen on {listen}")]
    Listen {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Http(#[source] std::io::Error),
    #[error("shard {partition} is not a partition of the bus ({partitions} partitions)")]
    UnknownShard { partition: u32, partitions: u32 },
    #[error("a service task panicked")]
    Panicked,
    #[error("failed to start the key escrow")]
    Escrow(#[source] crate::escrow::EscrowError),
}

/// Health and readiness, shared with the HTTP handlers.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    failed: Mutex<Option<String>>,
}

impl Health {
    fn fail(&self, why: String) {
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert(why);
        }
    }
}

struct Ops {
    registry: Registry,
    health: Arc<Health>,
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &ops.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthz(State(ops): State<Arc<Ops>>) -> Response {
    match ops.health.failed.lock().ok().and_then(|f| f.clone()) {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {why}\n")).into_response(),
    }
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    if ops.health.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

/// Opens the bus the settings name and runs the roles until `shutdown`
/// turns true (or a service fails).
pub async fn serve(
    settings: Settings,
    roles: Roles,
    shutdown: watch::Receiver<bool>,
    on_listening: impl FnOnce(std::net::SocketAddr) + Send,
) -> Result<(), ServeError> {
    if settings.kafka.is_empty() {
        let path = settings.bus_dir();
        let bus = EmbeddedBus::open(
            &path,
            EmbeddedConfig {
                partitions: settings.partitions,
                prefix: settings.topic_prefix.clone(),
            },
        )
        .map_err(|source| ServeError::EmbeddedBus { path, source })?;
        serve_on(
            Arc::new(bus),
            settings,
            roles,
            shutdown,
            on_listening,
            None,
            None,
        )
        .await
    } else {
        let bus = KafkaBus::connect(&settings.kafka, &settings.topic_prefix)
            .await
            .map_err(|source| ServeError::Kafka {
                bootstrap: settings.kafka.clone(),
                source,
            })?;
        let bus = Arc::new(bus);
        let escrow = match (&settings.master_key_file, roles.engine) {
            (Some(file), true) => Some(Arc::new(
                Escrow::connect(&settings.kafka, &settings.topic_prefix, file)
                    .await
                    .map_err(ServeError::Escrow)?,
            )),
            (None, true) => {
                tracing::warn!(
                    message = "no master key (--master-key-file): shards' key material is not \
                               escrowed, so a shard can move only to an engine that reaches its directory"
                );
                None
            }
            _ => None,
        };
        // Without a fixed shard list, engines split the shards through a
        // consumer group.
        let membership = if roles.engine && !roles.drain && settings.shards.is_empty() {
            let group = format!("{}engine", settings.topic_prefix);
            Some(
                Membership::join(&settings.kafka, &settings.topic_prefix, &group).map_err(
                    |source| ServeError::Kafka {
                        bootstrap: settings.kafka.clone(),
                        source,
                    },
                )?,
            )
        } else {
            None
        };
        let result = serve_on(
            Arc::clone(&bus),
            settings,
            roles,
            shutdown,
            on_listening,
            membership,
            escrow.clone(),
        )
        .await;
        if let Ok(bus) = Arc::try_unwrap(bus) {
            bus.close(Duration::from_millis(SHUTDOWN_WAIT_MS)).await;
        }
        if let Some(escrow) = escrow.and_then(|e| Arc::try_unwrap(e).ok()) {
            escrow.close(Duration::from_millis(SHUTDOWN_WAIT_MS)).await;
        }
        result
    }
}

/// Runs the roles on `bus`.
pub async fn serve_on<B: Bus>(
    bus: Arc<B>,
    settings: Settings,
    roles: Roles,
    mut shutdown: watch::Receiver<bool>,
    on_listening: impl FnOnce(std::net::SocketAddr) + Send,
    membership: Option<Membership>,
    escrow: Option<Arc<Escrow>>,
) -> Result<(), ServeError> {
    let mut registry = Registry::default();
    let health = Arc::new(Health::default());
    let mut app = Router::new();
    let mut tasks = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut ingestor = None;
    if roles.ingest {
        let config = twinlog_ingest::IngestConfig {
            app_secrets: settings.app_secrets.clone(),
            verify_token: settings.verify_token.clone(),
            requests_in_flight_max: settings.requests_in_flight_max,
            raw_retention_ms: i64::from(settings.raw_retention_days) * 86_400_000,
            ..twinlog_ingest::IngestConfig::default()
        };
        let dir = settings.ingest_dir();
        let bus = Arc::clone(&bus);
        let opened = tokio::task::block_in_place(|| {
            twinlog_ingest::Ingestor::open(&dir, config, bus, &mut registry)
        })
        .map_err(ServeError::Ingest)?;
        let opened = Arc::new(opened);
        app = app.merge(Arc::clone(&opened).router());
        ingestor = Some(opened);
    }
    let mut gateway = None;
    if roles.ingest && !settings.graph_base_url.is_empty() {
        let config = twinlog_gateway::GatewayConfig {
            graph_base_url: settings.graph_base_url.clone(),
            access_token: settings.access_token.clone(),
            number_rate_per_s: settings.number_rate_per_s,
            number_rate_overrides: settings.number_rate_overrides.clone(),
            queue_depth_max: settings.send_queue_depth_max,
            ..twinlog_gateway::GatewayConfig::default()
        };
        let opened = twinlog_gateway::Gateway::new(config, Arc::clone(&bus), &mut registry)
            .map_err(ServeError::Gateway)?;
        let opened = Arc::new(opened);
        app = app.merge(Arc::clone(&opened).router());
        gateway = Some(opened);
    }
    if let Some(ingestor) = &ingestor {
        // Retention: purge expired raw bodies now and then.
        let ingestor = Arc::clone(ingestor);
        let mut stop = stop_rx.clone();
        let health = Arc::clone(&health);
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(PURGE_INTERVAL_MS)) => {}
                    _ = stop.changed() => return Ok(()),
                }
                let now = crate::runner::now_ms();
                if let Err(error) = tokio::task::block_in_place(|| ingestor.purge_expired(now)) {
                    tracing::error!(message = "raw-body retention purge failed", %error);
                    health.fail(format!("retention purge: {error}"));
                }
            }
        });
    }

    if roles.engine {
        let metrics = RunnerMetrics::new(&mut registry);
        let supervisor = Supervisor {
            bus: Arc::clone(&bus),
            settings: settings.clone(),
            roles,
            metrics,
            running: BTreeMap::new(),
            escrow,
        };
        let stop = stop_rx.clone();
        let health = Arc::clone(&health);
        tasks.spawn(async move {
            let result = supervisor.run(membership, stop).await;
            if let Err(error) = &result {
                health.fail(error.to_string());
            }
            result
        });
    }

    if roles.project {
        let path = settings.views_dir();
        let store = tokio::task::block_in_place(|| twinlog_query::Store::open(&path))
            .map_err(|source| ServeError::Views { path, source })?;
        let projector = twinlog_query::Projector::new(
            store.clone(),
            projection_config(&settings)?,
            Arc::clone(&bus),
            Arc::new(twinlog_query::NoOpener),
            (0..bus.partitions()).collect(),
            &mut registry,
        );
        let auth = twinlog_query::Auth::new(
            settings
                .api_tokens
                .iter()
                .filter_map(|t| crate::config::api_token(t))
                .collect(),
        );
        let api = twinlog_query::api::ApiState::new(store, auth, projector.readiness());
        app = app.merge(twinlog_query::api::v1_router(api));
        let stop = stop_rx.clone();
        let health = Arc::clone(&health);
        tasks.spawn(async move {
            let result = projector.run(stop).await.map_err(ServeError::Project);
            if let Err(error) = &result {
                health.fail(error.to_string());
            }
            result
        });
    }

    let ops = Arc::new(Ops {
        registry,
        health: Arc::clone(&health),
    });
    let app = app.merge(
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(ops),
    );
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| ServeError::Listen {
            listen: settings.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        listen: settings.listen.clone(),
        source,
    })?;
    tracing::info!(message = "listening", %addr, ingest = roles.ingest, engine = roles.engine);
    on_listening(addr);
    {
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await
                .map_err(ServeError::Http)
        });
    }
    health.ready.store(true, Ordering::Release);

    // Run until asked to stop or until a service fails (or, draining, until
    // every shard is done: the HTTP server is then the one task left).
    let mut outcome = Ok(());
    loop {
        if roles.drain && tasks.len() <= 1 {
            break;
        }
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(error))) => { outcome = Err(error); break; }
                Some(Err(_)) => { outcome = Err(ServeError::Panicked); break; }
            },
        }
    }
    health.ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    if let Some(gateway) = gateway {
        gateway.shutdown().await;
    }
    let drain = async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Err(error)) = joined {
                tracing::error!(message = "service stopped with an error", %error);
            }
        }
    };
    if tokio::time::timeout(Duration::from_millis(SHUTDOWN_WAIT_MS), drain)
        .await
        .is_err()
    {
        tracing::warn!(message = "services did not stop in time; aborting them");
        tasks.abort_all();
    }
    drop(ingestor);
    outcome
}

type ShardTask = (
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<Shard, RunnerError>>,
);

/// Starts and stops the shard tasks: all (or the configured) partitions,
/// or those the engine group assigns.
struct Supervisor<B: Bus> {
    bus: Arc<B>,
    settings: Settings,
    roles: Roles,
    metrics: RunnerMetrics,
    running: BTreeMap<u32, ShardTask>,
    /// With Kafka and a master key: shards are restored from the topics when
    /// their directory is missing or behind, and escrow their keys.
    escrow: Option<Arc<Escrow>>,
}

async fn next_event(membership: &mut Option<Membership>) -> Option<GroupEvent> {
    match membership {
        Some(m) => m.next().await,
        None => std::future::pending().await,
    }
}

impl<B: Bus> Supervisor<B> {
    async fn run(
        mut self,
        mut membership: Option<Membership>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ServeError> {
        let partitions = self.bus.partitions();
        if membership.is_none() {
            let owned: Vec<u32> = if self.settings.shards.is_empty() {
                (0..partitions).collect()
            } else {
                self.settings.shards.clone()
            };
            for partition in owned {
                if partition >= partitions {
                    return Err(ServeError::UnknownShard {
                        partition,
                        partitions,
                    });
                }
                self.start(partition).await?;
            }
        }
        let outcome = loop {
            if self.roles.drain && self.running.values().all(|(_, h)| h.is_finished()) {
                break self.reap().await;
            }
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() { break Ok(()); }
                }
                event = next_event(&mut membership) => match event {
                    Some(GroupEvent::Assigned(assigned)) => {
                        if let Err(error) = self.start_all(assigned).await {
                            break Err(error);
                        }
                    }
                    Some(GroupEvent::Revoked { partitions, done }) => {
                        for partition in partitions {
                            self.stop_shard(partition).await;
                        }
                        let _ = done.send(());
                    }
                    None => membership = None,
                },
                _ = tokio::time::sleep(Duration::from_millis(250)), if !self.roles.drain => {
                    if let Err(error) = self.reap().await {
                        break Err(error);
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(50)), if self.roles.drain => {}
            }
        };
        let owned: Vec<u32> = self.running.keys().copied().collect();
        for partition in owned {
            self.stop_shard(partition).await;
        }
        if let Some(m) = membership {
            tokio::task::block_in_place(|| m.leave());
        }
        outcome
    }

    /// Removes finished shard tasks; an error ends the engine.
    async fn reap(&mut self) -> Result<(), ServeError> {
        let finished: Vec<u32> = self
            .running
            .iter()
            .filter(|(_, (_, h))| h.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for partition in finished {
            if let Some((_, handle)) = self.running.remove(&partition) {
                match handle.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(RunnerError::Fenced { partition })) => {
                        // Another engine owns it now: release it. Its local
                        // copy is checked (and, with escrow, restored from
                        // the topics) if it is ever assigned back.
                        tracing::warn!(
                            message = "audit shard released: it was taken over by another engine (fenced)",
                            partition
                        );
                    }
                    Ok(Err(error)) => return Err(ServeError::Runner(error)),
                    Err(_) => return Err(ServeError::Panicked),
                }
            }
        }
        self.metrics.set_shards_owned(self.running.len());
        Ok(())
    }

    async fn start_all(&mut self, partitions: Vec<u32>) -> Result<(), ServeError> {
        for partition in partitions {
            if !self.running.contains_key(&partition) {
                self.start(partition).await?;
            }
        }
        Ok(())
    }

    async fn start(&mut self, partition: u32) -> Result<(), ServeError> {
        let dir = self.settings.shard_dir(partition);
        let deadline = std::time::Instant::now() + Duration::from_millis(SHARD_OPEN_WAIT_MS_MAX);
        let shard = loop {
            // On Kafka, fence every earlier owner first: then the committed
            // topics are final when the open reads their ends.
            let producer = if self.fencing() {
                match ShardProducer::init(
                    &self.settings.kafka,
                    &self.settings.topic_prefix,
                    partition,
                )
                .await
                {
                    Ok(p) => Some(Arc::new(p)),
                    Err(error) if std::time::Instant::now() < deadline => {
                        tracing::warn!(message = "shard producer not available yet; retrying", partition, %error);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    Err(source) => {
                        return Err(ServeError::Kafka {
                            bootstrap: self.settings.kafka.clone(),
                            source,
                        })
                    }
                }
            } else {
                None
            };
            let opened = match &self.escrow {
                Some(escrow) => {
                    open_shard(
                        self.bus.as_ref(),
                        escrow,
                        &dir,
                        partition,
                        self.settings.audit_topic,
                        Some(&self.metrics),
                    )
                    .await
                }
                None => tokio::task::block_in_place(|| {
                    Shard::open(&dir, partition, self.settings.audit_topic)
                }),
            };
            match opened {
                Ok(shard) => match producer {
                    Some(p) => break shard.with_producer(p),
                    None => break shard,
                },
                // The previous owner may still hold the shard's store.
                Err(error) if std::time::Instant::now() < deadline => {
                    tracing::warn!(message = "audit shard not available yet; retrying", partition, %error);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        let config = RunConfig {
            tick_interval_ms: if self.roles.drain {
                0
            } else {
                self.settings.tick_interval_ms
            },
            exit_when_idle: self.roles.drain,
            ..RunConfig::default()
        };
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(run_shard(
            Arc::clone(&self.bus),
            shard,
            config,
            self.metrics.clone(),
            rx,
        ));
        self.running.insert(partition, (tx, handle));
        self.metrics.set_shards_owned(self.running.len());
        tracing::info!(message = "audit shard started", partition);
        Ok(())
    }

    /// Whether shards publish through transactional producers (Kafka, with
    /// the audit topic on).
    fn fencing(&self) -> bool {
        !self.settings.kafka.is_empty() && self.settings.audit_topic
    }

    /// Stops a shard and waits until its store is closed.
    async fn stop_shard(&mut self, partition: u32) {
        if let Some((tx, handle)) = self.running.remove(&partition) {
            let _ = tx.send(true);
            match handle.await {
                Ok(Ok(shard)) => tokio::task::block_in_place(|| drop(shard)),
                Ok(Err(error)) => {
                    tracing::error!(message = "audit shard stopped with an error", partition, %error)
                }
                Err(_) => tracing::error!(message = "audit shard task panicked", partition),
            }
            tracing::info!(message = "audit shard stopped", partition);
        }
        self.metrics.set_shards_owned(self.running.len());
    }
}

/// The read side's settings: the rate card (read now, so a bad card stops
/// the start with its line number) and the handoff quiet period.
fn projection_config(settings: &Settings) -> Result<twinlog_projections::Config, ServeError> {
    let card = match &settings.rate_card {
        None => twinlog_projections::RateCard::default(),
        Some(path) => {
            let fail = |detail: String| ServeError::RateCard {
                path: path.clone(),
                detail,
            };
            let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
            twinlog_projections::RateCard::parse(&text).map_err(|e| fail(e.to_string()))?
        }
    };
    let mut config = twinlog_projections::Config::new(card);
    config.handoff_quiet_s = settings.handoff_quiet_s;
    Ok(config)
}

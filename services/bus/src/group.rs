//! Engine membership in a Kafka consumer group, used only to split the
//! audit shards (one per partition) between engine processes. The group
//! subscribes to the audit topic; its partitions are paused at once, so the
//! membership fetches nothing and commits nothing: shards keep their own
//! input offsets.
//!
//! **Invariant:** a revocation is acknowledged only after the engine has
//! stopped the revoked shards. librdkafka's eager protocol hands a partition
//! to another member only after every member has rejoined, so two live
//! members never fold the same shard at once. (A member cut off from the
//! group but still running, a zombie, is not fenced by this; the shard's
//! store lock fences it on one machine.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;

use crate::{BusError, Topic};

/// Longest the group waits for the engine to stop revoked shards.
pub const REVOKE_WAIT_MS_MAX: u64 = 120_000;
/// The group session timeout: how soon a dead engine's shards move.
pub const SESSION_TIMEOUT_MS: u32 = 6_000;
/// Membership events queued for the engine.
const EVENTS_QUEUE_MAX: usize = 16;

/// A change of the shards this process owns.
#[derive(Debug)]
pub enum GroupEvent {
    /// These partitions are now this member's.
    Assigned(Vec<u32>),
    /// These partitions must be stopped; send on `done` once they are.
    Revoked {
        partitions: Vec<u32>,
        done: std::sync::mpsc::SyncSender<()>,
    },
}

struct Ctx {
    events: mpsc::Sender<GroupEvent>,
}

impl ClientContext for Ctx {}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<u32> {
    let mut out: Vec<u32> = tpl
        .elements()
        .iter()
        .filter_map(|e| u32::try_from(e.partition()).ok())
        .collect();
    out.sort_unstable();
    out
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions = partitions_of(tpl);
            if partitions.is_empty() {
                return;
            }
            let (done, wait) = std::sync::mpsc::sync_channel(1);
            tracing::info!(message = "engine group revokes shards", ?partitions);
            if self
                .events
                .blocking_send(GroupEvent::Revoked { partitions, done })
                .is_ok()
                && wait
                    .recv_timeout(Duration::from_millis(REVOKE_WAIT_MS_MAX))
                    .is_err()
            {
                tracing::error!(message = "revoked shards did not stop in time");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // Membership only: fetch nothing.
                if let Err(error) = consumer.pause(tpl) {
                    tracing::warn!(message = "failed to pause the group's partitions", %error);
                }
                let partitions = partitions_of(tpl);
                tracing::info!(message = "engine group assigns shards", ?partitions);
                let _ = self.events.blocking_send(GroupEvent::Assigned(partitions));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(message = "engine group rebalance failed", %error)
            }
        }
    }
}

/// This process's membership in the engine group. Dropping it leaves the
/// group.
pub struct Membership {
    events: mpsc::Receiver<GroupEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Membership {
    /// Joins `group` on the audit topic of `prefix` at `bootstrap`.
    pub fn join(bootstrap: &str, prefix: &str, group: &str) -> Result<Membership, BusError> {
        let (tx, events) = mpsc::channel(EVENTS_QUEUE_MAX);
        let consumer: BaseConsumer<Ctx> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "latest")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", "300000")
            .create_with_context(Ctx { events: tx })
            .map_err(|e| {
                BusError::kafka(format!("create the engine group member for {group}"), e)
            })?;
        let topic = Topic::Audit.name(prefix);
        consumer
            .subscribe(&[&topic])
            .map_err(|e| BusError::kafka(format!("subscribe the engine group to {topic}"), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("twinlog-engine-group".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        // Rebalance callbacks run inside poll.
                        let _ = consumer.poll(Duration::from_millis(100));
                    }
                    // Leave the group so the shards move at once.
                    consumer.unsubscribe();
                    let _ = consumer.poll(Duration::from_millis(100));
                })
                .map_err(|e| BusError::InvalidConfig {
                    detail: format!("cannot start the engine group thread: {e}"),
                })?
        };
        Ok(Membership {
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// The next change of this member's shards; `None` once it left.
    pub async fn next(&mut self) -> Option<GroupEvent> {
        self.events.recv().await
    }

    /// Leaves the group. Revocations that arrive while leaving are
    /// acknowledged at once: the caller has stopped its shards.
    pub fn leave(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.events.close();
        while let Ok(event) = self.events.try_recv() {
            if let GroupEvent::Revoked { done, .. } = event {
                let _ = done.send(());
            }
        }
        if let Some(thread) = self.thread.take() {
            // Acknowledge revocations until the thread is gone.
            while !thread.is_finished() {
                while let Ok(event) = self.events.try_recv() {
                    if let GroupEvent::Revoked { done, .. } = event {
                        let _ = done.send(());
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = thread.join();
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.shutdown();
    }
}

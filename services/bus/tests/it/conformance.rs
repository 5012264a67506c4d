//! The conformance suite, run against a fresh embedded bus, check by check
//! (so a failure names the check), and all in a row on one bus.

use std::sync::Arc;

use twinlog_bus::conformance as c;

use crate::open;

fn fresh(partitions: u32) -> (tempfile::TempDir, Arc<twinlog_bus::EmbeddedBus>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let bus = open(dir.path(), partitions);
    (dir, bus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_bus_is_empty() {
    let (_dir, bus) = fresh(4);
    c::fresh_bus_is_empty(&*bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip() {
    let (_dir, bus) = fresh(4);
    c::round_trip(&*bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offsets_are_contiguous() {
    let (_dir, bus) = fresh(4);
    c::offsets_are_contiguous(&*bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_same_partition_in_every_topic() {
    let (_dir, bus) = fresh(12);
    c::same_key_same_partition_in_every_topic(&*bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_wakes_on_publish() {
    let (_dir, bus) = fresh(4);
    c::read_wakes_on_publish(bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_past_end_waits_then_returns_empty() {
    let (_dir, bus) = fresh(4);
    c::read_past_end_waits_then_returns_empty(&*bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_lose_and_duplicate_nothing() {
    let (_dir, bus) = fresh(4);
    c::concurrent_publishers_lose_and_duplicate_nothing(bus, 8, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn big_payload_round_trips() {
    let (_dir, bus) = fresh(4);
    c::big_payload_round_trips(&*bus, 2 * 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_are_errors() {
    let (_dir, bus) = fresh(4);
    c::limits_are_errors(&*bus).await;
}

/// All checks on one bus, one after the other: each must hold on a bus that
/// already holds the others' records (as a shared Kafka cluster would).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_on_one_bus() {
    let (_dir, bus) = fresh(3);
    c::fresh_bus_is_empty(&*bus).await;
    c::run_all(Arc::clone(&bus)).await;
    c::run_all(bus).await;
}

//! The fault suite: each test starts a Redis Stack of its own (with a password), puts engram
//! under load, breaks the server (SIGKILL, SIGSTOP, `CLIENT KILL`, a restart with empty data,
//! `maxmemory`, wrong credentials, a ten-second outage) and checks a client-side ledger of
//! acknowledged writes against the server afterwards. Every figure measured goes to the
//! report printed by `cargo xtask chaos`.
//!
//! During the whole suite every log line (tracing and `log`), every error seen and every
//! metric label is searched for the servers' password: none may show it.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use engram_config::{Config, Durability, RedisUrl};
use engram_memory::{MemoryEntry, MemoryQuery, MemoryStore};
use engram_resilience::{
    BreakerState, CircuitBreaker, HealthStatus, MetricsObserver, Observer, Observers, TokioClock,
};
use engram_storage::layers::StackBuilder;
use engram_storage::redis::{RedisBackend, RedisBackendOptions};
use engram_storage::testkit::{random_namespace, suite_schema};
use engram_storage::{
    ErrorKind, IndexSchema, ItemOutcome, Namespace, Record, RecordId, StorageBackend,
};
use support::{OwnServer, ServerOptions, figure, index_name};

/// Searches everything engram prints or reports for the servers' passwords.
mod secrets {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, Once, OnceLock};

    use engram_storage::testkit::random_token;
    use metrics_util::debugging::{DebuggingRecorder, Snapshotter};

    static SECRETS: OnceLock<[String; 2]> = OnceLock::new();
    static SCANNED: AtomicU64 = AtomicU64::new(0);
    static LEAKS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static MARKED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    static INSTALL: Once = Once::new();

    /// The servers' password, and a wrong one tried against them.
    pub(crate) fn password() -> &'static str {
        &all()[0]
    }

    /// A wrong password, also never to be shown.
    pub(crate) fn wrong_password() -> &'static str {
        &all()[1]
    }

    fn all() -> &'static [String; 2] {
        SECRETS.get_or_init(|| {
            let t = random_token();
            [format!("chaos-pw-{t}"), format!("chaos-wrong-{t}")]
        })
    }

    /// Searches one text for the secrets.
    pub(crate) fn observe(text: &str) {
        SCANNED.fetch_add(1, Ordering::Relaxed);
        if all().iter().any(|s| text.contains(s.as_str())) {
            let shown: String = text.chars().take(400).collect();
            LEAKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(shown);
        }
        if text.contains("index is missing on the server") {
            MARKED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(text.to_owned());
        }
    }

    /// Log lines that announced a re-created index.
    pub(crate) fn reensure_lines() -> usize {
        MARKED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    #[derive(Clone, Copy)]
    struct Writer;

    impl Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            observe(&String::from_utf8_lossy(buf));
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Logger;

    impl log::Log for Logger {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            observe(&format!("{} {} {}", record.level(), record.target(), record.args()));
        }
        fn flush(&self) {}
    }

    /// Captures every tracing event, every `log` record (fred logs through `log`) and every
    /// metric, once per process.
    pub(crate) fn install() {
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(|| Writer)
                .with_ansi(false)
                .finish();
            let _ = tracing::subscriber::set_global_default(subscriber);
            if log::set_boxed_logger(Box::new(Logger)).is_ok() {
                log::set_max_level(log::LevelFilter::Trace);
            }
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            if recorder.install().is_ok() {
                let _ = SNAPSHOTTER.set(snapshotter);
            }
        });
    }

    /// Searches every metric key and label, then fails if any text seen so far held a secret.
    pub(crate) fn check(test: &str) {
        if let Some(s) = SNAPSHOTTER.get() {
            for (key, _, _, _) in s.snapshot().into_vec() {
                observe(&format!("{key:?}"));
            }
        }
        let leaks = LEAKS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        assert!(leaks.is_empty(), "{test}: a secret appeared in: {leaks:#?}");
        super::figure(test, "texts_searched_for_secrets", SCANNED.load(Ordering::Relaxed), "texts");
    }
}

/// Breaker transitions, rejections and retries, as the stack reports them.
#[derive(Debug, Default)]
struct Events {
    transitions: Mutex<Vec<(Instant, BreakerState, BreakerState)>>,
    rejected: AtomicU64,
    retries: AtomicU64,
    budget_refusals: AtomicU64,
}

impl Observer for Events {
    fn retry(&self, _: &'static str, _: u32, _: Duration) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    fn retry_budget_exhausted(&self, _: &'static str) {
        self.budget_refusals.fetch_add(1, Ordering::Relaxed);
    }
    fn breaker_transition(&self, _: &'static str, from: BreakerState, to: BreakerState) {
        self.transitions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((
            Instant::now(),
            from,
            to,
        ));
    }
    fn breaker_rejected(&self, _: &'static str, _: BreakerState) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

impl Events {
    fn saw(&self, from: BreakerState, to: BreakerState) -> bool {
        self.transitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|(_, f, t)| *f == from && *t == to)
    }
}

/// The product's layered stack over a Redis backend, as `MemoryStore` builds it.
struct Rig {
    backend: Arc<RedisBackend>,
    stack: Arc<dyn StorageBackend>,
    breaker: Option<Arc<CircuitBreaker>>,
    events: Arc<Events>,
    schema: IndexSchema,
    ns: Namespace,
}

async fn rig(config: &Config, options: RedisBackendOptions) -> Result<Rig> {
    let backend = Arc::new(RedisBackend::connect(&config.redis, options).await?);
    secrets::observe(&format!("{backend:?} {config:?}"));
    let events = Arc::new(Events::default());
    let observer: Arc<dyn Observer> =
        Arc::new(Observers(vec![Arc::new(MetricsObserver), events.clone()]));
    let inner: Arc<dyn StorageBackend> = backend.clone();
    let builder =
        StackBuilder::from_config(inner, config, "chaos", Arc::new(TokioClock), observer)?;
    let breaker = builder.breaker().cloned();
    let stack = builder.build();
    let schema = suite_schema();
    stack.ensure_index(&schema).await?;
    Ok(Rig { backend, stack, breaker, events, schema, ns: random_namespace() })
}

fn payload(i: u64, size: usize) -> Vec<u8> {
    let mut p = format!("payload-{i}-").into_bytes();
    p.resize(size, b'a' + (i % 26) as u8);
    p
}

fn record(ns: &Namespace, i: u64, size: usize) -> Record {
    let id = RecordId::new(format!("w{i:07}")).unwrap_or_else(|e| panic!("{e}"));
    Record::new(ns.clone(), id, payload(i, size)).with_vector(vec![1.0, (i % 7) as f32, 0.5, 0.25])
}

/// Records one error's text for the secrets search, and returns its kind's name.
fn seen(e: &dyn std::fmt::Debug, display: &str) -> String {
    secrets::observe(&format!("{display} {e:?}"));
    display.to_owned()
}

fn kind_name(outcome: &ItemOutcome<()>) -> &'static str {
    match outcome {
        ItemOutcome::Succeeded(()) => "ok",
        ItemOutcome::Failed(e) => {
            seen(e, &e.to_string());
            e.kind().as_str()
        }
        ItemOutcome::NotAttempted => "not_attempted",
    }
}

/// Reads every record of the ledger back (bare backend, no retries) and counts those missing
/// and those that differ from what was acknowledged.
async fn audit(rig: &Rig, ledger: &[u64], size: usize) -> Result<(usize, usize)> {
    let (mut lost, mut differ) = (0, 0);
    for chunk in ledger.chunks(500) {
        let ids: Vec<RecordId> =
            chunk.iter().map(|i| record(&rig.ns, *i, size).id).collect::<Vec<_>>();
        let report = rig.backend.get_batch(&rig.ns, &ids).await;
        for (i, item) in chunk.iter().zip(report.items) {
            match item {
                ItemOutcome::Succeeded(Some(r)) => {
                    let want = record(&rig.ns, *i, size);
                    if r.payload != want.payload || r.vector != want.vector {
                        differ += 1;
                    }
                }
                ItemOutcome::Succeeded(None) => lost += 1,
                other => anyhow::bail!("audit read failed: {:?}", other.ok().is_some()),
            }
        }
    }
    Ok((lost, differ))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn protected(aof: Option<&'static str>) -> ServerOptions {
    ServerOptions { aof, password: Some(secrets::password().to_owned()), extra: Vec::new() }
}

/// What one kill run measured.
struct KillRun {
    acked: usize,
    acked_before_kill: usize,
    lost: usize,
    lost_before_kill: usize,
    differ: usize,
    recovery: Option<Duration>,
    errors: BTreeMap<String, u64>,
}

/// Writes batches of 20 records continuously, SIGKILLs the server after 1 s, restarts it on
/// the same data folder 0.5 s later, writes 1.5 s more, then audits the ledger.
async fn kill_during_writes(
    test: &str,
    aof: Option<&'static str>,
    durability: Durability,
) -> Result<Option<KillRun>> {
    secrets::install();
    let Some(mut server) = OwnServer::start(test, protected(aof))? else {
        return Ok(None);
    };
    let mut config = server.config(&index_name(test), 4);
    config.redis.durability = durability;
    config.redis.durability_timeout = Duration::from_millis(1500);
    config.circuit_breaker.consecutive_failures = Some(5);
    config.circuit_breaker.open_duration = Duration::from_millis(200);
    config.circuit_breaker.half_open_probes = 1;
    let rig = Arc::new(rig(&config, RedisBackendOptions::default()).await?);
    let ledger: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    const SIZE: usize = 256;
    let writer = {
        let (rig, ledger, stop) = (rig.clone(), ledger.clone(), stop.clone());
        tokio::spawn(async move {
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Record> = (n..n + 20).map(|i| record(&rig.ns, i, SIZE)).collect();
                let report = rig.stack.put_batch(batch).await;
                let mut failed = false;
                for (i, item) in (n..).zip(report.items) {
                    match kind_name(&item) {
                        "ok" => ledger
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((i, Instant::now())),
                        kind => {
                            failed = true;
                            *errors.entry(kind.to_owned()).or_default() += 1;
                        }
                    }
                }
                n += 20;
                if failed {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            errors
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked_before_kill = ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
    server.kill9()?;
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart()?;
    let restarted_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let errors = tokio::time::timeout(Duration::from_secs(15), writer).await??;
    let ledger = ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    // Acknowledged before the kill: everything acked up to the kill instant.
    let before: Vec<u64> =
        ledger.iter().filter(|(_, at)| *at <= killed_at).map(|(i, _)| *i).collect();
    let all: Vec<u64> = ledger.iter().map(|(i, _)| *i).collect();
    let recovery =
        ledger.iter().find(|(_, at)| *at > restarted_at).map(|(_, at)| *at - restarted_at);
    let (lost, differ) = audit(&rig, &all, SIZE).await?;
    let (lost_before_kill, _) = audit(&rig, &before, SIZE).await?;
    ensure!(acked_before_kill <= before.len(), "the ledger shrank");
    figure(test, "writes_acknowledged", all.len(), "records");
    figure(test, "writes_acknowledged_before_kill", before.len(), "records");
    figure(test, "acknowledged_writes_lost", lost, "records");
    figure(test, "acknowledged_writes_differing", differ, "records");
    figure(test, "errors_by_kind", format!("{errors:?}"), "items");
    if let Some(r) = recovery {
        figure(test, "first_ack_after_restart", ms(r), "ms");
    }
    secrets::check(test);
    Ok(Some(KillRun {
        acked: all.len(),
        acked_before_kill: before.len(),
        lost,
        lost_before_kill,
        differ,
        recovery,
        errors,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_appendfsync_always_loses_no_acknowledged_write() -> Result<()> {
    let test = "kill9_aof_always";
    let Some(run) = kill_during_writes(test, Some("always"), Durability::None).await? else {
        return Ok(());
    };
    ensure!(run.acked_before_kill > 0, "no write was acknowledged before the kill");
    ensure!(
        run.lost == 0 && run.differ == 0,
        "lost {} and changed {} acknowledged writes",
        run.lost,
        run.differ
    );
    ensure!(run.recovery.is_some(), "writes never resumed after the restart: {:?}", run.errors);
    ensure!(run.acked > run.acked_before_kill, "no write after the restart");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_waitaof_on_everysec_loses_no_acknowledged_write() -> Result<()> {
    let test = "kill9_aof_everysec_waitaof";
    let Some(run) = kill_during_writes(test, Some("everysec"), Durability::WaitAof).await? else {
        return Ok(());
    };
    ensure!(run.acked_before_kill > 0, "no write was acknowledged before the kill");
    ensure!(
        run.lost == 0 && run.differ == 0,
        "lost {} and changed {} acknowledged writes",
        run.lost,
        run.differ
    );
    ensure!(run.recovery.is_some(), "writes never resumed after the restart: {:?}", run.errors);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_everysec_reports_its_loss_window() -> Result<()> {
    let test = "kill9_aof_everysec";
    let Some(run) = kill_during_writes(test, Some("everysec"), Durability::None).await? else {
        return Ok(());
    };
    // A process kill keeps what reached the kernel's page cache; only a machine crash loses
    // the last second. The figure is reported, and bounded by what was acknowledged.
    ensure!(run.lost <= run.acked_before_kill, "lost more than was written before the kill");
    ensure!(run.differ == 0, "changed {} acknowledged writes", run.differ);
    figure(test, "loss_window_writes", run.lost_before_kill, "records");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_without_aof_loses_writes_and_the_ledger_sees_it() -> Result<()> {
    let test = "kill9_no_aof";
    let Some(run) = kill_during_writes(test, None, Durability::None).await? else {
        return Ok(());
    };
    // The oracle must be able to fail: without persistence every write before the kill is
    // gone, and the audit must say so.
    ensure!(run.acked_before_kill > 0, "no write was acknowledged before the kill");
    ensure!(
        run.lost_before_kill == run.acked_before_kill,
        "without AOF, {} of {} writes before the kill survived?",
        run.acked_before_kill - run.lost_before_kill,
        run.acked_before_kill
    );
    ensure!(run.recovery.is_some(), "writes never resumed after the restart: {:?}", run.errors);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waitaof_on_a_server_without_aof_is_refused_when_the_index_is_ensured() -> Result<()> {
    let test = "waitaof_without_aof";
    secrets::install();
    let Some(server) = OwnServer::start(test, protected(None))? else {
        return Ok(());
    };
    let mut config = server.config(&index_name(test), 4);
    config.redis.durability = Durability::WaitAof;
    let e = match rig(&config, RedisBackendOptions::default()).await {
        Ok(_) => anyhow::bail!("waitaof without appendonly must be refused"),
        Err(e) => e,
    };
    let e = e.downcast::<engram_storage::StorageError>()?;
    seen(&e, &e.to_string());
    ensure!(e.kind() == ErrorKind::Unsupported, "expected unsupported, found {e}");
    ensure!(e.message().contains("appendonly"), "the message should name appendonly: {e}");
    secrets::check(test);
    Ok(())
}

/// One call's outcome in the pause test.
#[derive(Debug, Clone, Copy)]
struct Call {
    started: Instant,
    took: Duration,
    kind: Option<ErrorKind>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_fails_fast_opens_the_breaker_and_recovers_after_sigcont() -> Result<()> {
    let test = "sigstop_breaker";
    secrets::install();
    let Some(mut server) = OwnServer::start(test, protected(None))? else {
        return Ok(());
    };
    let mut config = server.config(&index_name(test), 4);
    config.redis.command_timeout = Duration::from_millis(300);
    // No retries here, so that each call's outcome is its one attempt's (the amplification
    // test covers retries).
    config.retry.max_attempts = 1;
    config.circuit_breaker.consecutive_failures = Some(3);
    config.circuit_breaker.open_duration = Duration::from_millis(500);
    config.circuit_breaker.max_open_duration = Some(Duration::from_secs(1));
    config.circuit_breaker.half_open_probes = 1;
    config.circuit_breaker.max_half_open_wait = Duration::from_millis(300);
    let rig = Arc::new(rig(&config, RedisBackendOptions::default()).await?);
    let ids: Vec<RecordId> = (0..10).map(|i| record(&rig.ns, i, 64).id).collect();
    let report = rig.stack.put_batch((0..10).map(|i| record(&rig.ns, i, 64)).collect()).await;
    ensure!(report.items.iter().all(|o| o.ok().is_some()), "prefill failed");
    let mut admin = server.admin()?;

    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak_in_flight = Arc::new(AtomicUsize::new(0));
    let run = |secs: f64| {
        let mut tasks = Vec::new();
        for w in 0..4 {
            let (rig, calls, ids) = (rig.clone(), calls.clone(), ids.clone());
            let (in_flight, peak) = (in_flight.clone(), peak_in_flight.clone());
            tasks.push(tokio::spawn(async move {
                let end = Instant::now() + Duration::from_secs_f64(secs);
                let mut n = w;
                while Instant::now() < end {
                    let id = ids[n % ids.len()].clone();
                    n += 1;
                    let now = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                    peak.fetch_max(now, Ordering::Relaxed);
                    let started = Instant::now();
                    let report = rig.stack.get_batch(&rig.ns, &[id]).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let kind = match report.items.into_iter().next() {
                        Some(ItemOutcome::Succeeded(_)) => None,
                        Some(ItemOutcome::Failed(e)) => {
                            seen(&e, &e.to_string());
                            Some(e.kind())
                        }
                        _ => Some(ErrorKind::Unexpected),
                    };
                    calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Call {
                        started,
                        took: started.elapsed(),
                        kind,
                    });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        tasks
    };
    let join = |tasks: Vec<tokio::task::JoinHandle<()>>| async move {
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t).await??;
        }
        anyhow::Ok(())
    };

    join(run(0.5)).await?;
    let before = admin.commandstats()?;
    // The command a read by id sends: if that changes, the count below must follow it, or it
    // would count nothing and pass.
    let read = "hmget";
    anyhow::ensure!(before.attempts(read) > 0, "the warm-up's reads were not counted as {read}");
    let rss_before = support::rss_kib();
    server.pause()?;
    let paused_at = Instant::now();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (rig, sampling) = (rig.clone(), sampling.clone());
        tokio::spawn(async move {
            let (mut peak_queue, mut peak_rss) = (0usize, 0u64);
            while sampling.load(Ordering::Relaxed) {
                peak_queue = peak_queue.max(rig.backend.connection().queued_commands());
                peak_rss = peak_rss.max(support::rss_kib());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (peak_queue, peak_rss)
        })
    };
    join(run(4.0)).await?;
    sampling.store(false, Ordering::Relaxed);
    let (peak_queue, peak_rss) = sampler.await?;
    let during: Vec<Call> = calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|c| c.started >= paused_at)
        .copied()
        .collect();
    let paused_transitions = {
        let open = rig.events.saw(BreakerState::Closed, BreakerState::Open);
        let half = rig.events.saw(BreakerState::Open, BreakerState::HalfOpen);
        let reopened = rig.events.saw(BreakerState::HalfOpen, BreakerState::Open);
        (open, half, reopened)
    };
    server.resume()?;
    let resumed_at = Instant::now();
    // What the stopped server received runs now; read its counters once it has.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_pause = admin.commandstats()?;
    let reached_server = after_pause.attempts(read) - before.attempts(read);
    join(run(2.5)).await?;

    let count = |k: Option<ErrorKind>| during.iter().filter(|c| c.kind == k).count();
    let timeouts = count(Some(ErrorKind::Timeout));
    let open = count(Some(ErrorKind::CircuitOpen));
    let others = during.len() - timeouts - open;
    let mut fast: Vec<Duration> =
        during.iter().filter(|c| c.kind == Some(ErrorKind::CircuitOpen)).map(|c| c.took).collect();
    fast.sort();
    let slowest = during.iter().map(|c| c.took).max().unwrap_or_default();
    let after: Vec<Call> = calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|c| c.started >= resumed_at)
        .copied()
        .collect();
    let recovery =
        after.iter().filter(|c| c.kind.is_none()).map(|c| c.started + c.took - resumed_at).min();
    let last_ok = after.iter().rev().take(20).all(|c| c.kind.is_none());

    figure(test, "calls_while_stopped", during.len(), "calls");
    figure(test, "timeouts_while_stopped", timeouts, "calls");
    figure(test, "rejected_by_open_breaker", open, "calls");
    figure(test, "other_outcomes_while_stopped", others, "calls");
    figure(test, "fail_fast_latency_p50", ms(percentile(&fast, 0.5)), "ms");
    figure(test, "fail_fast_latency_p99", ms(percentile(&fast, 0.99)), "ms");
    figure(test, "fail_fast_latency_max", ms(fast.last().copied().unwrap_or_default()), "ms");
    figure(test, "slowest_call_while_stopped", ms(slowest), "ms");
    figure(test, "commands_that_reached_the_stopped_server", reached_server, "commands");
    figure(test, "peak_queued_commands_in_client", peak_queue, "commands");
    figure(test, "peak_calls_in_flight", peak_in_flight.load(Ordering::Relaxed), "calls");
    figure(test, "rss_growth_while_stopped", peak_rss.saturating_sub(rss_before), "KiB");
    if let Some(r) = recovery {
        figure(test, "recovery_after_sigcont", ms(r), "ms");
    }

    ensure!(timeouts >= 1, "no call timed out while the server was stopped");
    ensure!(open >= 1, "the breaker never rejected a call");
    ensure!(others == 0, "calls while stopped ended otherwise than timeout or open: {others}");
    // Bounded: one attempt of 300 ms, never a hang.
    ensure!(
        slowest < Duration::from_secs(3),
        "a call took {slowest:?} while the server was stopped"
    );
    // Rejections do not touch the network: far fewer commands reached the server than calls.
    let attempted = during.len() - open;
    ensure!(
        reached_server <= attempted as u64,
        "{reached_server} commands reached the stopped server for {attempted} admitted calls"
    );
    ensure!(
        (reached_server as usize) < during.len() / 4,
        "{reached_server} commands reached the server for {} calls: the breaker did not shed load",
        during.len()
    );
    ensure!(
        percentile(&fast, 0.5) < Duration::from_millis(50),
        "rejections are not fast: {fast:?}"
    );
    ensure!(peak_queue <= 64, "the client queued {peak_queue} commands");
    let (opened, half_opened, reopened) = paused_transitions;
    ensure!(
        opened && half_opened && reopened,
        "breaker transitions while stopped: {:?}",
        rig.events.transitions
    );
    ensure!(
        rig.events.saw(BreakerState::HalfOpen, BreakerState::Closed),
        "the breaker never closed"
    );
    ensure!(recovery.is_some() && last_ok, "calls did not recover after SIGCONT");
    if let Some(b) = &rig.breaker {
        ensure!(b.snapshot().state == BreakerState::Closed, "the breaker is not closed at the end");
    }
    secrets::check(test);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_mid_pipeline_reports_each_item_and_retries_without_duplicates() -> Result<()> {
    let test = "client_kill_pipeline";
    secrets::install();
    let Some(server) = OwnServer::start(test, protected(None))? else {
        return Ok(());
    };
    let config = server.config(&index_name(test), 4);
    let options = RedisBackendOptions { batch_chunk: 64, ..RedisBackendOptions::default() };
    let rig = rig(&config, options).await?;
    const N: u64 = 3000;
    const SIZE: usize = 2048;
    // Fresh namespace; the kill cuts every normal connection (this test's admin one too), so
    // the counters are read first.
    let ns = random_namespace();
    let before = server.admin()?.commandstats()?;
    let (port, password) = (server.port(), secrets::password().to_owned());
    let killer = tokio::task::spawn_blocking(move || -> Result<(i64, Instant)> {
        let mut a = support::Admin::connect(port)?;
        a.ok(&["AUTH", &password])?;
        std::thread::sleep(Duration::from_millis(30));
        let killed = a.ok(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])?;
        Ok((killed.int().unwrap_or(0), Instant::now()))
    });
    let sent = Instant::now();
    let records: Vec<Record> = (0..N).map(|i| record(&ns, i, SIZE)).collect();
    let report = rig.backend.put_batch(records).await;
    let took = sent.elapsed();
    let (killed, killed_at) = killer.await??;
    figure(test, "connections_killed", killed, "connections");
    figure(test, "kill_after", ms(killed_at - sent), "ms");
    figure(test, "batch_took", ms(took), "ms");
    ensure!(killed >= 1, "CLIENT KILL found no connection to cut");
    ensure!(killed_at - sent < took, "the kill came after the batch had finished");
    let report = (report, ns);
    let (report, ns) = report;
    let mut admin = server.admin()?;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for item in &report.items {
        *kinds.entry(kind_name(item)).or_default() += 1;
    }
    // Per item: what succeeded is there, byte for byte; what was never sent is not.
    let rig = Rig { ns: ns.clone(), ..rig };
    let succeeded: Vec<u64> = (0..N).filter(|i| report.items[*i as usize].ok().is_some()).collect();
    let not_sent: Vec<u64> =
        (0..N).filter(|i| matches!(report.items[*i as usize], ItemOutcome::NotAttempted)).collect();
    let (lost, differ) = audit(&rig, &succeeded, SIZE).await?;
    ensure!(lost == 0 && differ == 0, "{lost} reported writes missing, {differ} differ");
    let (absent, _) = audit(&rig, &not_sent, SIZE).await?;
    ensure!(absent == not_sent.len(), "items reported not attempted were written");
    ensure!(
        report.items.iter().all(|o| match o {
            ItemOutcome::Failed(e) =>
                matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            _ => true,
        }),
        "a failed item has an unexpected kind: {kinds:?}"
    );
    // The retry: through the stack, only the items that did not succeed.
    let again: Vec<Record> = (0..N)
        .filter(|i| report.items[*i as usize].ok().is_none())
        .map(|i| record(&ns, i, SIZE))
        .collect();
    let resent = again.len();
    let mut retried = rig.stack.put_batch(again).await;
    for _ in 0..3 {
        if retried.items.iter().all(|o| o.ok().is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let left: Vec<Record> = retried
            .items
            .iter()
            .zip((0..N).filter(|i| report.items[*i as usize].ok().is_none()))
            .filter(|(o, _)| o.ok().is_none())
            .map(|(_, i)| record(&ns, i, SIZE))
            .collect();
        retried = rig.stack.put_batch(left).await;
    }
    let all: Vec<u64> = (0..N).collect();
    let (lost, differ) = audit(&rig, &all, SIZE).await?;
    let keys = admin.keys(&format!("{}{}:*", rig.schema.key_prefix, ns))?;
    let after = admin.commandstats()?;
    // One HSET per record write that ran (a transaction cut before EXEC ran none).
    let executed = after.get("hset").calls - before.get("hset").calls;
    // Versions: an idempotent whole-record write leaves version 1, however often it ran.
    let versions = rig
        .backend
        .get_batch(&ns, &all.iter().map(|i| record(&ns, *i, SIZE).id).collect::<Vec<_>>())
        .await
        .items
        .into_iter()
        .filter(|o| !matches!(o, ItemOutcome::Succeeded(Some(r)) if r.version == 1))
        .count();
    figure(test, "first_attempt_outcomes", format!("{kinds:?}"), "items");
    figure(test, "items_resent", resent, "items");
    figure(test, "writes_executed_by_server", executed, "HSETs");
    figure(test, "writes_executed_twice", executed.saturating_sub(N), "HSETs");
    figure(test, "duplicate_records", keys.len().saturating_sub(N as usize), "records");
    figure(test, "client_redeliveries", rig.backend.connection().redeliveries(), "commands");
    ensure!(lost == 0 && differ == 0, "after the retry {lost} missing, {differ} differ");
    ensure!(keys.len() == N as usize, "{} keys for {N} records", keys.len());
    ensure!(versions == 0, "{versions} records have another version than 1");
    secrets::check(test);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_empty_data_reensures_the_index_and_reports_degraded_until_indexed()
-> Result<()> {
    let test = "restart_empty";
    secrets::install();
    let Some(mut server) = OwnServer::start(test, protected(None))? else {
        return Ok(());
    };
    let index = index_name(test);
    let mut config = server.config(&index, 16);
    config.memory.dedup.exact = false;
    config.health.enabled = true;
    config.health.interval = Duration::from_millis(100);
    config.health.timeout = Duration::from_millis(100);
    let store = MemoryStore::connect(config).await?;
    let ns = "tenant-a";
    let embedding =
        |i: usize| -> Vec<f32> { (0..16).map(|d| ((i * 31 + d * 7) % 17) as f32 + 1.0).collect() };
    let entry = |i: usize| {
        MemoryEntry::builder(ns, format!("memory number {i}"))
            .id(format!("m{i:05}"))
            .embedding(embedding(i))
            .build()
    };
    let first: Vec<_> = (0..10).map(entry).collect::<Result<_, _>>()?;
    ensure!(store.add_batch(first).await.iter().all(Result::is_ok), "first writes failed");

    server.kill9()?;
    server.wipe_data()?;
    server.restart()?;
    let restarted = Instant::now();
    // Writes resume without the index (hashes and scripts need none; the script cache is
    // reloaded on NOSCRIPT).
    const M: usize = 8000;
    let mut written = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries: Vec<MemoryEntry> = (10..10 + M).map(entry).collect::<Result<_, _>>()?;
    for chunk in entries.chunks(1000) {
        loop {
            let results = store.add_batch(chunk.to_vec()).await;
            let ok = results.iter().filter(|r| r.is_ok()).count();
            for r in results.iter().filter_map(|r| r.as_ref().err()) {
                seen(r, &r.to_string());
            }
            if ok == chunk.len() {
                written += ok;
                break;
            }
            ensure!(Instant::now() < deadline, "writes did not resume after the restart");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let writes_resumed = restarted.elapsed();
    let lines_before = secrets::reensure_lines();
    // The first search finds the index gone, re-creates it once, and answers.
    let q = MemoryQuery::new(ns, embedding(12))?.k(5);
    let hits = store.query(q.clone()).await?;
    let reensured = restarted.elapsed();
    let mut admin = server.admin()?;
    let creates = admin.commandstats()?.get("ft.create").calls;
    let health = store.get_health_status().await;
    let degraded_seen = health.indexing() && health.status() != HealthStatus::Healthy;
    let first_percent =
        health.backend.as_ref().ok().and_then(|b| b.index.as_ref()).map(|i| i.percent_indexed);
    // Healthy again once indexing is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = store.get_health_status().await;
        if !h.indexing() && h.status() == HealthStatus::Healthy {
            break;
        }
        ensure!(Instant::now() < deadline, "still degraded after 60 s: {:?}", h.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let indexed = restarted.elapsed();
    let count = store.count(ns).await?;
    let hits_after = store.query(q).await?;
    figure(test, "writes_resumed_after_restart", ms(writes_resumed), "ms");
    figure(test, "index_recreated_after_restart", ms(reensured), "ms");
    figure(test, "fully_indexed_and_healthy_after_restart", ms(indexed), "ms");
    figure(test, "percent_indexed_at_first_search", format!("{first_percent:?}"), "fraction");
    figure(test, "ft_create_calls", creates, "calls");
    figure(test, "first_search_hits", hits.len(), "hits");
    ensure!(creates == 1, "the index was created {creates} times, expected once");
    ensure!(secrets::reensure_lines() > lines_before, "no log line said the index was missing");
    ensure!(degraded_seen, "health was not degraded while indexing ({first_percent:?})");
    ensure!(count == written as u64, "count {count}, expected {written}");
    ensure!(hits_after.len() == 5, "{} hits after indexing", hits_after.len());
    secrets::check(test);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxmemory_with_noeviction_fails_each_write_with_out_of_memory_and_writes_nothing()
-> Result<()> {
    let test = "maxmemory_noeviction";
    secrets::install();
    let Some(server) = OwnServer::start(test, protected(None))? else {
        return Ok(());
    };
    let config = server.config(&index_name(test), 4);
    let rig = rig(&config, RedisBackendOptions::default()).await?;
    const SIZE: usize = 1024;
    let report = rig.stack.put_batch((0..50).map(|i| record(&rig.ns, i, SIZE)).collect()).await;
    ensure!(report.items.iter().all(|o| o.ok().is_some()), "prefill failed");
    let mut admin = server.admin()?;
    let used: u64 = admin.info_field("memory", "used_memory")?.parse()?;
    admin.ok(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])?;
    admin.ok(&["CONFIG", "SET", "maxmemory", &(used / 2).to_string()])?;
    let keys_before = admin.dbsize()?;
    let before = admin.commandstats()?;
    // Ten overwrites of existing records, twenty new ones, with other content.
    let changed = |i: u64| {
        let mut r = record(&rig.ns, i, SIZE);
        r.payload = payload(i + 1_000_000, SIZE);
        r
    };
    let batch: Vec<Record> = (0..10).chain(100..120).map(changed).collect();
    let report = rig.stack.put_batch(batch).await;
    let after = admin.commandstats()?;
    admin.ok(&["CONFIG", "SET", "maxmemory", "0"])?;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for item in &report.items {
        *kinds.entry(kind_name(item)).or_default() += 1;
    }
    // Each record's write is one HSET in a transaction (refused when queued, so its EXEC
    // aborts and nothing of the transaction runs).
    let attempts = after.attempts("hset") - before.attempts("hset");
    let permanent =
        report.items.iter().all(|o| matches!(o, ItemOutcome::Failed(e) if !e.is_temporary()));
    let (lost, differ) = audit(&rig, &(0..50).collect::<Vec<_>>(), SIZE).await?;
    let (absent, _) = audit(&rig, &(100..120).collect::<Vec<_>>(), SIZE).await?;
    let keys_after = admin.dbsize()?;
    figure(test, "outcomes_over_maxmemory", format!("{kinds:?}"), "items");
    figure(test, "write_attempts_seen_by_server", attempts, "HSETs");
    figure(test, "records_half_written_or_changed", lost + differ, "records");
    ensure!(kinds.get("out_of_memory") == Some(&30), "expected 30 out_of_memory, found {kinds:?}");
    ensure!(permanent, "out of memory must not be retried");
    ensure!(attempts == 30, "{attempts} write attempts for 30 items: retried or not sent");
    ensure!(lost == 0 && differ == 0, "existing records changed: {lost} missing, {differ} differ");
    ensure!(absent == 20 && keys_after == keys_before, "new records were written");
    // Below maxmemory again, writes succeed.
    let report = rig.stack.put_batch((100..120).map(|i| record(&rig.ns, i, SIZE)).collect()).await;
    ensure!(report.items.iter().all(|o| o.ok().is_some()), "writes did not resume");
    secrets::check(test);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_missing_permissions_fail_at_startup_without_a_retry_storm() -> Result<()>
{
    let test = "auth_at_startup";
    secrets::install();
    let Some(server) = OwnServer::start(test, protected(None))? else {
        return Ok(());
    };
    let mut admin = server.admin()?;
    let before = admin.commandstats()?;
    let mut config = server.config(&index_name(test), 4);
    config.redis.pool_size = 2;
    config.redis.url = RedisUrl::new(format!(
        "redis://default:{}@127.0.0.1:{}",
        secrets::wrong_password(),
        server.port()
    ));
    let started = Instant::now();
    let e = match MemoryStore::connect(config.clone()).await {
        Ok(_) => anyhow::bail!("a wrong password was accepted"),
        Err(e) => e,
    };
    let took = started.elapsed();
    seen(&e, &e.to_string());
    ensure!(e.storage_kind() == Some(ErrorKind::Auth), "expected auth, found {e}");
    // Nothing keeps trying in the background.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = admin.commandstats()?;
    let tried = after.since(&before);
    let logins: u64 = ["auth", "hello"].iter().map(|c| tried.get(*c).copied().unwrap_or(0)).sum();
    figure(test, "wrong_password_login_attempts", logins, "commands");
    figure(test, "wrong_password_time_to_error", ms(took), "ms");
    ensure!(logins <= 2, "{logins} login attempts for a pool of 2: a retry storm");

    // A user that may read but not create the index: refused at startup, once.
    let reader_pw = format!("{}-reader", secrets::password());
    admin.ok(&[
        "ACL",
        "SETUSER",
        "reader",
        "on",
        &format!(">{reader_pw}"),
        "~*",
        "resetchannels",
        "+@read",
        "+@connection",
        "-@write",
        "-@admin",
        "-@scripting",
    ])?;
    let before = admin.commandstats()?;
    let mut config = server.config(&index_name(test), 4);
    config.redis.url =
        RedisUrl::new(format!("redis://reader:{reader_pw}@127.0.0.1:{}", server.port()));
    let e = match MemoryStore::connect(config).await {
        Ok(_) => anyhow::bail!("a user without write permissions created the index"),
        Err(e) => e,
    };
    seen(&e, &e.to_string());
    ensure!(
        e.storage_kind() == Some(ErrorKind::PermissionDenied),
        "expected permission denied, found {e}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = admin.commandstats()?;
    let denied: u64 = after.0.iter().map(|(k, c)| c.rejected - before.get(k).rejected).sum();
    figure(test, "missing_permission_denied_commands", denied, "commands");
    ensure!((1..=2).contains(&denied), "{denied} refused commands: expected one, no retries");
    secrets::check(test);
    Ok(())
}

/// One logical operation: its number, when it finished, and its error kind if it failed.
type Outcome = (u64, Instant, Option<ErrorKind>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_amplification_through_a_ten_second_outage_stays_bounded() -> Result<()> {
    let test = "retry_amplification";
    secrets::install();
    let Some(mut server) = OwnServer::start(test, protected(None))? else {
        return Ok(());
    };
    // The product's defaults, but for a shorter command timeout.
    let mut config = server.config(&index_name(test), 4);
    config.redis.command_timeout = Duration::from_millis(500);
    let rig = Arc::new(rig(&config, RedisBackendOptions::default()).await?);
    let mut admin = server.admin()?;
    const OPS: u64 = 1000;
    const EVERY: Duration = Duration::from_millis(17);
    let pause_at = Duration::from_secs(2);
    let resume_at = Duration::from_secs(12);
    let recovered_at = Duration::from_secs(15);
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let start = Instant::now();
    let s0 = admin.commandstats()?;
    let issuer = {
        let (rig, outcomes) = (rig.clone(), outcomes.clone());
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for i in 0..OPS {
                tokio::time::sleep_until((start + EVERY * i as u32).into()).await;
                let (rig, outcomes) = (rig.clone(), outcomes.clone());
                tasks.push(tokio::spawn(async move {
                    let report = rig.stack.put_batch(vec![record(&rig.ns, i, 128)]).await;
                    let kind = match report.items.into_iter().next() {
                        Some(ItemOutcome::Succeeded(())) => None,
                        Some(ItemOutcome::Failed(e)) => {
                            seen(&e, &e.to_string());
                            Some(e.kind())
                        }
                        _ => Some(ErrorKind::Unexpected),
                    };
                    outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((
                        i,
                        Instant::now(),
                        kind,
                    ));
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };
    tokio::time::sleep_until((start + pause_at).into()).await;
    let s_pause = admin.commandstats()?;
    let ops_before = (pause_at.as_millis() / EVERY.as_millis()) as u64 + 1;
    server.pause()?;
    tokio::time::sleep_until((start + resume_at).into()).await;
    server.resume()?;
    tokio::time::sleep_until((start + recovered_at).into()).await;
    let s_recovered = admin.commandstats()?;
    let ops_to_recovered = (recovered_at.as_millis() / EVERY.as_millis()) as u64 + 1;
    tokio::time::timeout(Duration::from_secs(30), issuer).await??;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s_end = admin.commandstats()?;
    let attempts = |a: &support::CommandStats, b: &support::CommandStats| {
        (a.attempts("hset") - b.attempts("hset")) as f64
    };
    let total = attempts(&s_end, &s0) / OPS as f64;
    let before_outage = attempts(&s_pause, &s0) / ops_before as f64;
    let after_recovery = attempts(&s_end, &s_recovered) / (OPS - ops_to_recovered) as f64;
    let outage = attempts(&s_recovered, &s_pause) / (ops_to_recovered - ops_before) as f64;
    let outcomes = outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, k) in &outcomes {
        *kinds.entry(k.map_or("ok", ErrorKind::as_str)).or_default() += 1;
    }
    let acked: Vec<u64> =
        outcomes.iter().filter(|(_, _, k)| k.is_none()).map(|(i, _, _)| *i).collect();
    let (lost, differ) = audit(&rig, &acked, 128).await?;
    figure(test, "logical_operations", outcomes.len(), "ops");
    figure(test, "outcomes", format!("{kinds:?}"), "ops");
    figure(test, "server_attempts", attempts(&s_end, &s0), "HSETs");
    figure(test, "amplification_total", format!("{total:.3}"), "attempts/op");
    figure(
        test,
        "amplification_steady_before_outage",
        format!("{before_outage:.3}"),
        "attempts/op",
    );
    figure(test, "amplification_during_outage", format!("{outage:.3}"), "attempts/op");
    figure(
        test,
        "amplification_steady_after_recovery",
        format!("{after_recovery:.3}"),
        "attempts/op",
    );
    figure(test, "retries", rig.events.retries.load(Ordering::Relaxed), "retries");
    figure(
        test,
        "retries_refused_by_budget",
        rig.events.budget_refusals.load(Ordering::Relaxed),
        "retries",
    );
    figure(test, "rejected_by_breaker", rig.events.rejected.load(Ordering::Relaxed), "calls");
    ensure!(outcomes.len() == OPS as usize, "{} of {OPS} operations finished", outcomes.len());
    ensure!(lost == 0 && differ == 0, "{lost} acknowledged writes lost, {differ} differ");
    ensure!(before_outage <= 1.1, "amplification before the outage {before_outage:.3}");
    ensure!(after_recovery <= 1.1, "amplification after recovery {after_recovery:.3}");
    ensure!(total <= 1.5, "amplification over the whole run {total:.3}");
    secrets::check(test);
    Ok(())
}

//! [`RedisBackend`]: the [`StorageBackend`] on one RediSearch index of a Redis Stack server.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use engram_config::{Durability, RedisConfig};
use fred::bytes::Bytes;
use fred::clients::{Client, Pipeline};
use fred::prelude::{ClientLike, Error as FredError, HashesInterface, KeysInterface, Value};
use fred::types::{ClusterHash, CustomCommand, Key};
use futures::StreamExt;

use super::codec;
use super::index::{self, Info};
use super::query::{self, Hybrid, Knn, knn_query};
use super::scripts::{self, Script};
use super::{RedisConnection, classify, is_index_exists, is_noscript};
use crate::backend::{
    BackendInfo, BatchReport, Capabilities, IndexStatus, ItemOutcome, QueryPlan, ScanCursor,
    ScanPage, SearchHit, StorageBackend, Touched, UnboxedBackend, VectorQuery, check_batch_len,
    check_find_limit, check_scan_limit,
};
use crate::error::{ErrorKind, Operation, StorageError};
use crate::filter::Filter;
use crate::ids::{KeyCodec, Namespace, RecordId};
use crate::in_process::{cas_conflict, check_cas_version};
use crate::record::{AccessStats, Record, Timestamp};
use crate::schema::{Algorithm, IndexSchema, VectorType};
use crate::vector;

/// Default number of records (or ids) per pipeline of a batch.
///
/// `CHUNKS_IN_FLIGHT` (4) chunks of a batch are in flight at once, so the server always has the
/// next chunk while the client reads the replies of one and encodes another. Measured with
/// 20k entries of the bench dataset (FLAT index, batches of 1,000, one caller, one runtime
/// worker, Redis Stack 7.4.1 on 2 cores): 256 × 2 in flight gave 58k entries/s, 128 × 2 59-61k,
/// 64 × 4 62-65k (smaller chunks shorten the start and end of a batch, when only one side
/// works). A pipeline also shares one command timeout: 64 records take an HNSW graph at about
/// 2,000 records/s some 32 ms.
pub const DEFAULT_WRITE_CHUNK: usize = 64;

/// What [`RedisBackend::ensure_index`](StorageBackend::ensure_index) does about RediSearch's
/// `ON_TIMEOUT` policy.
///
/// Under RESP2 a search that hits the server's query timeout with the default policy
/// (`RETURN`) silently returns the results found so far, often none. With `FAIL` it returns
/// an error, which this backend reports as [`ErrorKind::Timeout`]. The policy is a setting of
/// the whole server (`FT.CONFIG SET ON_TIMEOUT`), not of one index or query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTimeoutPolicy {
    /// Set the policy to `FAIL` when it is not (needs the `FT.CONFIG` permission).
    #[default]
    SetFail,
    /// Only check it: fail with [`ErrorKind::Unsupported`] when it is not `FAIL`.
    RequireFail,
}

/// Settings of a [`RedisBackend`] beyond the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisBackendOptions {
    /// Records (or ids) sent together in a batch: writes and deletes as one pipeline (one round
    /// trip under one command timeout), reads as that many concurrent `HMGET`s. Default:
    /// [`DEFAULT_WRITE_CHUNK`].
    pub batch_chunk: usize,
    /// Server-side time limit of one search or count (`FT.SEARCH ... TIMEOUT`), or `None` for
    /// the server's `TIMEOUT` setting (500 ms unless changed). Default: `None`.
    pub query_timeout: Option<Duration>,
    /// What to do when the server would return partial results on a query timeout.
    /// Default: [`OnTimeoutPolicy::SetFail`].
    pub on_timeout: OnTimeoutPolicy,
    /// [`QueryPlan::Auto`] on HNSW: brute force (`HYBRID_POLICY ADHOC_BF`, exact) when fewer
    /// records than this pass the search's pre-filter; else the server's plan when at least
    /// half of the index passes, batches otherwise. Default:
    /// [`DEFAULT_BRUTE_FORCE_BELOW`].
    pub brute_force_below: u64,
    /// [`QueryPlan::Auto`] on HNSW: the `BATCH_SIZE` of a batches plan (at least `k` is
    /// sent). Default: [`DEFAULT_BATCH_SIZE`].
    pub batch_size: u32,
    /// How long the estimate of a pre-filter's size (one `FT.SEARCH ... LIMIT 0 0`) is reused
    /// for choosing plans. Default: [`DEFAULT_PLAN_ESTIMATE_TTL`].
    pub plan_estimate_ttl: Duration,
}

/// Default of [`RedisBackendOptions::brute_force_below`].
///
/// Measured on the 50k-entry benchmark dataset (HNSW, M 16, EF_CONSTRUCTION 200, 384
/// dimensions, top 10 with a tag filter on one of 58 uneven sections, Redis Stack 7.4.1): brute
/// force over a section of fewer than 500 records took 0.39 ms a query against 1.3 ms for
/// batches of 100; from about 1,000 records batches are faster (0.76 ms against 0.94 ms for
/// 500 to 2,000, 0.61 ms against 2.0 ms above 5,000), at recall@10 0.98 to 0.99.
pub const DEFAULT_BRUTE_FORCE_BELOW: u64 = 1_000;

/// Default of [`RedisBackendOptions::batch_size`].
///
/// Each batch is an HNSW search for this many neighbours, filtered afterwards; unless a query
/// sets its own `EF_RUNTIME`, a batches plan searches with the smaller of the index's
/// `EF_RUNTIME` and the batch size. Measured on the 50k-entry dataset (sections of 1,000 to
/// 13,000 records, top 10, one query at a time): batches of 100 at `EF_RUNTIME` 100 took
/// 0.69-0.83 ms a query at recall@10 0.979-0.995; of 50 at 50, 0.52-0.65 ms at 0.964-0.971;
/// of 30 at 30, 0.47-0.60 ms at 0.951-0.964 (too close to 0.95). Over the whole query set
/// (500 queries, 16 callers, brute force below [`DEFAULT_BRUTE_FORCE_BELOW`], each run on a
/// new graph): batches of 40 at 40 gave recall@10 0.973 in three runs of three and 3.31-3.39x
/// the rate of the filtered query as sent before plans (the server's plan), against
/// 0.976-0.977 and 3.05-3.18x for batches of 50.
pub const DEFAULT_BATCH_SIZE: u32 = 40;

/// Default of [`RedisBackendOptions::plan_estimate_ttl`]: 10 seconds.
pub const DEFAULT_PLAN_ESTIMATE_TTL: Duration = Duration::from_secs(10);

/// [`QueryPlan::Auto`] on HNSW leaves the plan to the server when at least this share of the
/// index passes the pre-filter. Measured on the 50k-entry dataset with one namespace (the
/// whole index passing, top 10): the server's plan (it searches the graph with `EF_RUNTIME`)
/// gave 2,236 queries/s at `EF_RUNTIME` 100 against 1,905 for batches of 100, at the same
/// recall, and it honours a lower `EF_RUNTIME` where batches of 100 do not.
const SERVER_PLAN_FROM: f64 = 0.5;

/// Pre-filters whose size estimate is kept at most; when full, the oldest estimates go.
const PLAN_ESTIMATES_MAX: usize = 4096;

impl Default for RedisBackendOptions {
    fn default() -> Self {
        Self {
            batch_chunk: DEFAULT_WRITE_CHUNK,
            query_timeout: None,
            on_timeout: OnTimeoutPolicy::default(),
            brute_force_below: DEFAULT_BRUTE_FORCE_BELOW,
            batch_size: DEFAULT_BATCH_SIZE,
            plan_estimate_ttl: DEFAULT_PLAN_ESTIMATE_TTL,
        }
    }
}

/// The index this backend serves, once `ensure_index` has run.
#[derive(Debug)]
struct Ready {
    schema: IndexSchema,
    codec: KeyCodec,
    /// The fields a read by id asks for, in order ([`codec::read_fields`]).
    read_fields: Vec<Key>,
    /// Their names, in the same order.
    read_names: Vec<String>,
    /// Why this connection may not run `MULTI`/`EXEC` (an ACL without them), found by
    /// `ensure_index`: batch writes then fail with it before anything is sent.
    no_transactions: Option<StorageError>,
}

/// Records in one RediSearch index of a Redis Stack server.
///
/// One instance serves one index: [`StorageBackend::ensure_index`] creates or checks it and
/// remembers the schema; other operations before it fail with [`ErrorKind::IndexMissing`].
///
/// - Writes: transactions of typed commands (`MULTI`, per record `HSET` of every field,
///   `HDEL` of the fields an older version may have left, `PEXPIREAT` or `PERSIST`, `EXEC`;
///   `RECORDS_PER_TRANSACTION` (16) records each), so the record and its expiry change in one
///   step: a reader never sees half a record, a cut connection leaves the old one, and a
///   retried write is idempotent. A key of another type is not overwritten (`WRONGTYPE`, that
///   record's error; its expiry is still set). Compare-and-set is a Lua script
///   (`scripts::WRITE`). Batches are pipelined in chunks of
///   [`RedisBackendOptions::batch_chunk`], `CHUNKS_IN_FLIGHT` at a time, with one result per
///   record.
/// - Reads by id: typed `HMGET`s of the record's fields (`codec::read_fields`: the reply
///   carries no field names and the client builds no map of it), a chunk's all queued at
///   once so that fred writes them together (a pipeline would cost one socket write per
///   command).
/// - Durability: with `redis.durability = "waitaof"` every write pipeline (puts,
///   compare-and-set, deletes, touches) ends with `WAITAOF 1 0 <durability_timeout>` on the
///   same connection; its writes are reported written only when the server confirms the
///   fsync, else they fail with [`ErrorKind::Timeout`] (written, durability unknown).
/// - Index loss: when a search, find or count finds the index gone on the server (a restart
///   with empty data, a `FT.DROPINDEX` by someone else), the backend re-creates it once with
///   the schema of its `ensure_index` and runs the operation again; the server then indexes
///   existing records in the background (`percent_indexed` below 1 until it is done).
/// - Expiry: `PEXPIREAT` deletes a record on the server; until Redis does (up to seconds for
///   many keys at once), reads and searches compare `__exp` here (see Search).
/// - Search: KNN under a namespace pre-filter, with a plan chosen per query
///   ([`QueryPlan::Auto`]: brute force over fewer than
///   [`RedisBackendOptions::brute_force_below`] matching records, the server's plan when at
///   least half the index matches, else batches); expired
///   records the server still holds are dropped here, and when one came back the search runs
///   again with an expiry clause, so the results are those of live records only. Distances
///   are recomputed here in
///   `f64` from the returned vectors (RediSearch computes in `f32`), so they and the
///   `(distance, id)` order equal the in-process backend's. When more than `k` records tie at
///   the `k`-th distance, which of them the server returns is its choice.
/// - Count: `FT.SEARCH` with `LIMIT 0 0` on the namespace and expiry clauses (indexed records
///   only). Scan: `SCAN MATCH {namespace prefix}* TYPE hash`, never `KEYS`.
pub struct RedisBackend {
    conn: RedisConnection,
    options: RedisBackendOptions,
    ready: RwLock<Option<Arc<Ready>>>,
    write: Script,
    touch: Script,
    /// Size estimates of search pre-filters, for [`QueryPlan::Auto`]: count and when read.
    estimates: Mutex<HashMap<String, (u64, Instant)>>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("conn", &self.conn)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn command(name: &'static str) -> CustomCommand {
    // Route by the key on a cluster: `EVALSHA sha numkeys key ...` has it third.
    let hash = if name == "EVALSHA" { ClusterHash::Offset(2) } else { ClusterHash::FirstKey };
    CustomCommand::new_static(name, hash, false)
}

fn text(s: impl Into<String>) -> Value {
    Value::from(s.into())
}

fn bytes(b: Vec<u8>) -> Value {
    Value::Bytes(Bytes::from(b))
}

fn protocol(op: Operation, m: impl Into<String>) -> StorageError {
    StorageError::new(ErrorKind::Protocol, op, m)
}

fn to_info(v: Value) -> Info {
    match v {
        Value::Array(items) => Info::List(items.into_iter().map(to_info).collect()),
        Value::Map(_) => Info::List(v.into_array().into_iter().map(to_info).collect()),
        Value::Null => Info::Text(String::new()),
        other => Info::Text(other.as_str_lossy().map(|s| s.into_owned()).unwrap_or_default()),
    }
}

/// Field/value pairs of a search result (RESP2 flat array, or a map).
fn field_pairs(v: Value, op: Operation) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
    let items = match v {
        Value::Array(items) => items,
        Value::Map(_) => v.into_array(),
        Value::Null => Vec::new(),
        _ => return Err(protocol(op, "expected an array of hash fields")),
    };
    if items.len() % 2 != 0 {
        return Err(protocol(op, "hash fields came as an odd number of values"));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let name = k.as_string().ok_or_else(|| protocol(op, "a hash field name is not text"))?;
        // Binary values that happen to be UTF-8 arrive as strings: go through bytes.
        let value = v.into_bytes().map(|b| b.to_vec()).unwrap_or_default();
        out.push((name, value));
    }
    Ok(out)
}

/// The fields present in an `HMGET` reply, paired with their names (`names`, in the order
/// asked); none when the key does not exist.
fn read_values(
    v: Value,
    names: &[String],
    op: Operation,
) -> Result<Vec<(&str, Vec<u8>)>, StorageError> {
    let Value::Array(values) = v else {
        return Err(protocol(op, "HMGET did not return an array"));
    };
    if values.len() != names.len() {
        return Err(protocol(op, "HMGET returned another number of values than asked"));
    }
    Ok(names
        .iter()
        .zip(values)
        .filter_map(|(name, value)| match value {
            Value::Null => None,
            // Binary values that happen to be UTF-8 arrive as strings: go through bytes.
            value => {
                Some((name.as_str(), value.into_bytes().map(|b| b.to_vec()).unwrap_or_default()))
            }
        })
        .collect())
}

/// One outcome per pipelined item: the reply, the error, or `None` when not attempted.
type Outcomes = Vec<Option<Result<Value, FredError>>>;

/// Appends the outcomes of a chunk of `len` items to `out`: its replies, or its error for
/// every item when it failed whole, or `None` (not attempted) when it was not sent. `false`
/// when it failed whole, so that the chunks after it are not sent.
fn chunk_outcomes(
    out: &mut Outcomes,
    len: usize,
    chunk: Option<Result<Vec<Result<Value, FredError>>, FredError>>,
) -> bool {
    match chunk {
        Some(Ok(r)) if r.len() == len => out.extend(r.into_iter().map(Some)),
        Some(r) => {
            let error = r.err().unwrap_or_else(|| {
                FredError::new(fred::error::ErrorKind::Protocol, "pipeline reply count")
            });
            out.extend((0..len).map(|_| Some(Err(error.clone()))));
            return false;
        }
        None => out.extend((0..len).map(|_| None)),
    }
    true
}

/// Chunks of a batch in flight at once (see `RedisBackend::in_chunks` and
/// [`DEFAULT_WRITE_CHUNK`]).
///
/// With one, the server waited while the client encoded the next chunk and the client
/// waited for the server's replies: FLAT ingest, where the two take about as long per record,
/// ran at the sum of both times (20k dataset entries: 32k entries/s, 47k with two in flight).
const CHUNKS_IN_FLIGHT: usize = 4;

/// A command of a pipelined batch.
///
/// Typed commands are written by fred without a flush of their own when more commands wait
/// behind them; fred flushes the socket after every custom command (and every script), so a
/// batch uses typed commands where it can.
enum Cmd {
    /// A command by name (`EVALSHA`, routed by its key argument).
    Custom(&'static str, Vec<Value>),
    /// `MULTI` or `EXEC`, routed to the slot of the transaction's key.
    Transaction(&'static str, u16),
    /// `HSET key field value ...`.
    Hset(String, Vec<(String, Value)>),
    /// `HDEL key field ...`.
    Hdel(String, Vec<String>),
    /// `PEXPIREAT key ms`.
    PexpireAt(String, i64),
    /// `PERSIST key`.
    Persist(String),
    /// `DEL key`.
    Del(String),
}

impl Cmd {
    /// The key of a typed command.
    fn key(&self) -> Option<&str> {
        match self {
            Self::Custom(..) | Self::Transaction(..) => None,
            Self::Hset(key, _)
            | Self::Hdel(key, _)
            | Self::PexpireAt(key, _)
            | Self::Persist(key)
            | Self::Del(key) => Some(key),
        }
    }

    /// Queues the command on a pipeline; the error when it could not be queued.
    async fn queue(self, p: &Pipeline<Client>) -> Option<FredError> {
        match self {
            Self::Custom(name, args) => p.custom::<Value, _>(command(name), args).await,
            Self::Transaction(name, slot) => {
                let c = CustomCommand::new_static(name, ClusterHash::Custom(slot), false);
                p.custom::<Value, _>(c, Vec::<Value>::new()).await
            }
            Self::Hset(key, fields) => p.hset::<Value, _, _>(key, fields).await,
            Self::Hdel(key, fields) => p.hdel::<Value, _, _>(key, fields).await,
            Self::PexpireAt(key, at) => p.pexpire_at::<Value, _>(key, at, None).await,
            Self::Persist(key) => p.persist::<Value, _>(key).await,
            Self::Del(key) => p.del::<Value, _>(key).await,
        }
        .err()
    }
}

impl RedisBackend {
    /// Connects (see [`RedisConnection::connect`]) and makes a backend on that connection.
    ///
    /// # Errors
    /// Those of [`RedisConnection::connect`], or [`ErrorKind::InvalidInput`] for a
    /// `batch_chunk` of 0.
    pub async fn connect(
        config: &RedisConfig,
        options: RedisBackendOptions,
    ) -> Result<Self, StorageError> {
        Self::check_options(&options)?;
        let conn = RedisConnection::connect(config).await?;
        Ok(Self::with_connection(conn, options))
    }

    fn check_options(options: &RedisBackendOptions) -> Result<(), StorageError> {
        if options.batch_size == 0 {
            return Err(StorageError::new(
                ErrorKind::InvalidInput,
                Operation::Connect,
                "batch_size is 0, expected at least 1",
            ));
        }
        if options.batch_chunk == 0 {
            return Err(StorageError::new(
                ErrorKind::InvalidInput,
                Operation::Connect,
                "batch_chunk is 0, expected at least 1",
            ));
        }
        Ok(())
    }

    /// A backend on an existing connection (a `batch_chunk` of 0 is taken as 1).
    pub fn with_connection(conn: RedisConnection, mut options: RedisBackendOptions) -> Self {
        options.batch_chunk = options.batch_chunk.max(1);
        Self {
            conn,
            options,
            ready: RwLock::new(None),
            write: Script::new("write", scripts::WRITE),
            touch: Script::new("touch", scripts::TOUCH),
            estimates: Mutex::new(HashMap::new()),
        }
    }

    /// The connection.
    pub fn connection(&self) -> &RedisConnection {
        &self.conn
    }

    /// The options.
    pub fn options(&self) -> &RedisBackendOptions {
        &self.options
    }

    /// Drops the index this backend serves (`FT.DROPINDEX`), with its documents when
    /// `delete_documents` is set (`DD`). An explicit administrative step: engram never drops
    /// an index on its own. Later operations need `ensure_index` again.
    ///
    /// # Errors
    /// [`ErrorKind::IndexMissing`] before `ensure_index` or when the index is gone, or the
    /// classified server error.
    pub async fn drop_index(&self, delete_documents: bool) -> Result<(), StorageError> {
        let op = Operation::EnsureIndex;
        let ready = self.ready(op)?;
        let mut args = vec![text(ready.schema.name.clone())];
        if delete_documents {
            args.push(text("DD"));
        }
        self.exec(op, "FT.DROPINDEX", args).await?;
        *self.ready.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        Ok(())
    }

    fn ready(&self, op: Operation) -> Result<Arc<Ready>, StorageError> {
        self.ready.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone().ok_or_else(
            || {
                StorageError::new(
                    ErrorKind::IndexMissing,
                    op,
                    "no index yet: call ensure_index first",
                )
            },
        )
    }

    /// The index of a batch of `n` items, or the report failing every item when the batch is
    /// too large or no index is ready.
    fn batch_ready<T>(&self, op: Operation, n: usize) -> Result<Arc<Ready>, BatchReport<T>> {
        check_batch_len(n)
            .map_err(|e| e.for_operation(op))
            .and_then(|()| self.ready(op))
            .map_err(|e| BatchReport::all_failed(n, &e))
    }

    async fn exec(
        &self,
        op: Operation,
        name: &'static str,
        args: Vec<Value>,
    ) -> Result<Value, StorageError> {
        self.exec_raw(name, args).await.map_err(|e| classify(op, e))
    }

    async fn exec_raw(&self, name: &'static str, args: Vec<Value>) -> Result<Value, FredError> {
        self.conn.pool().next().custom(command(name), args).await
    }

    /// Sends `items` in chunks of `per_chunk`, each chunk through `send`, with up to
    /// [`CHUNKS_IN_FLIGHT`] chunks in flight so that the next chunk is encoded and written
    /// while the server works through the one before. One outcome per item. When a chunk
    /// fails whole (`send` gave an error: connection lost, timeout), its items get that error
    /// and the chunks not started yet are not attempted; a chunk already in flight still
    /// reports what happened to it.
    ///
    /// A batch of one chunk (a read of a few ids, most calls) is sent and awaited directly,
    /// without the stream of chunks: `FuturesUnordered` wakes its task again whenever all its
    /// futures are pending, which cost every such read one more poll of the caller's task
    /// (and of every layer around the backend), besides its own allocation.
    async fn in_chunks<T, F, Fut>(&self, items: Vec<T>, per_chunk: usize, send: F) -> Outcomes
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = Result<Vec<Result<Value, FredError>>, FredError>>,
    {
        let n = items.len();
        let per_chunk = per_chunk.max(1);
        if n <= per_chunk {
            let mut out = Vec::with_capacity(n);
            if n > 0 {
                chunk_outcomes(&mut out, n, Some(send(items).await));
            }
            return out;
        }
        let mut chunks = Vec::with_capacity(n.div_ceil(per_chunk));
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            chunks.push(items.by_ref().take(per_chunk).collect::<Vec<_>>());
        }
        let stop = AtomicBool::new(false);
        let mut replies = futures::stream::iter(chunks)
            .map(|chunk| {
                let len = chunk.len();
                let sent = (!stop.load(Ordering::Relaxed)).then(|| send(chunk));
                async move {
                    match sent {
                        Some(f) => (len, Some(f.await)),
                        None => (len, None),
                    }
                }
            })
            .buffered(CHUNKS_IN_FLIGHT);
        let mut out: Outcomes = Vec::with_capacity(n);
        while let Some((len, chunk)) = replies.next().await {
            if !chunk_outcomes(&mut out, len, chunk) {
                stop.store(true, Ordering::Relaxed);
            }
        }
        out
    }

    /// Sends items of one or more commands each ([`Cmd`]) in pipelines of `per_chunk` items
    /// (see [`Self::in_chunks`]), collecting replies with `try_all` so that one failing command does
    /// not hide the others. An item's outcome is its first error, else its last reply (the
    /// `EXEC` of a transaction).
    ///
    /// For writes (reads go through [`Self::hmget_each`]): under [`Durability::WaitAof`] each
    /// chunk ends with `WAITAOF 1 0 <timeout>` on the same connection, and the chunk's
    /// successful replies become timeouts unless the server confirms the local fsync.
    async fn pipelined(&self, items: Vec<Vec<Cmd>>, per_chunk: usize) -> Outcomes {
        let (durability, wait) = self.conn.durability();
        let wait_aof = durability == Durability::WaitAof;
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        self.in_chunks(items, per_chunk, |chunk| async move {
            let pipeline = self.conn.pool().next().pipeline();
            let mut sizes = Vec::with_capacity(chunk.len());
            let mut queued = Vec::new();
            for item in chunk {
                sizes.push(item.len());
                for cmd in item {
                    queued.push(cmd.queue(&pipeline).await);
                }
            }
            if wait_aof {
                let args = vec![text("1"), text("0"), text(wait_ms.to_string())];
                // A queueing error shows as a missing reply below.
                let _ = pipeline.custom::<Value, _>(command("WAITAOF"), args).await;
            }
            let mut replies = pipeline.try_all::<Value>().await;
            let unconfirmed = if wait_aof && replies.len() == queued.len() + 1 {
                match replies.pop() {
                    Some(Ok(Value::Array(counts)))
                        if counts.first().and_then(Value::as_i64).is_some_and(|n| n >= 1) =>
                    {
                        None
                    }
                    Some(Err(e)) => Some(e),
                    _ => Some(FredError::new(
                        fred::error::ErrorKind::Timeout,
                        format!(
                            "the server did not confirm the append-only file fsync of the batch within {wait_ms} ms (written, durability unknown)"
                        ),
                    )),
                }
            } else {
                None
            };
            if replies.len() != queued.len() || queued.is_empty() {
                // The pipeline failed as a whole.
                return Err(replies.pop().and_then(Result::err).unwrap_or_else(|| {
                    FredError::new(fred::error::ErrorKind::Protocol, "pipeline reply count")
                }));
            }
            // A command that could not be queued has no reply of its own.
            let mut replies = replies.into_iter().zip(queued).map(|(reply, queue_error)| {
                match queue_error {
                    Some(e) => Err(e),
                    None => reply,
                }
            });
            Ok(sizes
                .into_iter()
                .map(|size| {
                    let mut item: Result<Value, FredError> = Ok(Value::Null);
                    for reply in replies.by_ref().take(size) {
                        if item.is_ok() {
                            item = reply;
                        }
                    }
                    match (item, &unconfirmed) {
                        (Ok(_), Some(e)) => Err(e.clone()),
                        (item, _) => item,
                    }
                })
                .collect())
        })
        .await
    }

    /// `HMGET` of `fields` from every key, as concurrent typed commands on one connection, in
    /// chunks (see [`Self::in_chunks`]); a chunk whose every read failed counts as failed
    /// whole.
    async fn hmget_each(&self, keys: Vec<String>, fields: &[Key]) -> Outcomes {
        let client = self.conn.pool().next();
        self.in_chunks(keys, self.options.batch_chunk, |chunk| async move {
            let replies: Vec<Result<Value, FredError>> = futures::future::join_all(
                chunk.into_iter().map(|k| client.hmget(k, fields.to_vec())),
            )
            .await;
            match replies.iter().find_map(|r| r.as_ref().err()) {
                Some(e) if replies.iter().all(Result::is_err) => Err(e.clone()),
                _ => Ok(replies),
            }
        })
        .await
    }

    /// Runs an empty `MULTI`/`EXEC`. Batch writes are transactions, and a connection whose
    /// `MULTI` is refused would run a transaction's commands one by one: when the server
    /// refuses either command (an ACL without them), the error is kept and batch writes fail
    /// with it unsent. Other errors (the server gone) are returned.
    async fn check_transactions(
        &self,
        op: Operation,
    ) -> Result<Option<StorageError>, StorageError> {
        let client = self.conn.pool().next();
        let pipeline = client.pipeline();
        for name in ["MULTI", "EXEC"] {
            let c = CustomCommand::new_static(name, ClusterHash::Random, false);
            let _ = pipeline.custom::<Value, _>(c, Vec::<Value>::new()).await;
        }
        let replies = pipeline.try_all::<Value>().await;
        match &replies[..] {
            [Ok(_), Ok(_)] => Ok(None),
            [multi, exec] => {
                if multi.is_ok() {
                    // Leave no connection inside a transaction.
                    let c = CustomCommand::new_static("DISCARD", ClusterHash::Random, false);
                    let _ = client.custom::<Value, _>(c, Vec::<Value>::new()).await;
                }
                let e = multi.as_ref().err().or(exec.as_ref().err()).cloned();
                let e = classify(
                    op,
                    e.unwrap_or_else(|| {
                        FredError::new(fred::error::ErrorKind::Protocol, "MULTI/EXEC")
                    }),
                );
                match e.kind() {
                    ErrorKind::PermissionDenied | ErrorKind::Unexpected => {
                        Ok(Some(StorageError::new(
                            e.kind(),
                            Operation::Put,
                            format!(
                                "batch writes need MULTI and EXEC, which the server refused: {}",
                                e.message()
                            ),
                        )))
                    }
                    _ => Err(e),
                }
            }
            [.., Err(e)] => Err(classify(op, e.clone())),
            _ => Err(protocol(op, "MULTI/EXEC gave no replies")),
        }
    }

    async fn load_script(&self, script: &Script, op: Operation) -> Result<String, StorageError> {
        let reply = self.exec(op, "SCRIPT", vec![text("LOAD"), text(script.source)]).await?;
        let sha = reply
            .as_string()
            .ok_or_else(|| protocol(op, format!("SCRIPT LOAD of {} gave no SHA1", script.name)))?;
        script.set_sha(sha.clone());
        Ok(sha)
    }

    /// Runs a script on one key with `EVALSHA`, through [`Self::pipelined`] so that a
    /// `WAITAOF` follows it as it follows every write; a `NOSCRIPT` reply (nothing ran: a
    /// restart, a failover, `SCRIPT FLUSH`) reloads the script and runs it once more.
    async fn run_script(
        &self,
        script: &Script,
        key: String,
        argv: Vec<Value>,
        op: Operation,
    ) -> Result<Value, StorageError> {
        let mut sha = match script.sha() {
            Some(sha) => sha,
            None => self.load_script(script, op).await?,
        };
        let mut reloaded = false;
        loop {
            let mut args = Vec::with_capacity(argv.len() + 3);
            args.extend([text(sha), text("1"), text(key.clone())]);
            args.extend(argv.iter().cloned());
            match self.pipelined(vec![vec![Cmd::Custom("EVALSHA", args)]], 1).await.pop().flatten()
            {
                Some(Err(e)) if is_noscript(&e) && !reloaded => {
                    sha = self.load_script(script, op).await?;
                    reloaded = true;
                }
                o => return outcome(o, op).into_result(op),
            }
        }
    }

    /// An unconditional write of a record as typed commands, to run in a transaction (see
    /// [`transaction`]): `HSET` of every field, `HDEL` of the fields an older version may have
    /// left ([`codec::absent_fields`]), then `PEXPIREAT` or `PERSIST`.
    fn record_commands(schema: &IndexSchema, record: &Record, key: String) -> Vec<Cmd> {
        let fields = codec::encode(record).into_iter().map(|(n, v)| (n, bytes(v))).collect();
        let absent = codec::absent_fields(schema, record);
        let mut cmds = Vec::with_capacity(3);
        cmds.push(Cmd::Hset(key.clone(), fields));
        if !absent.is_empty() {
            cmds.push(Cmd::Hdel(key.clone(), absent));
        }
        cmds.push(match codec::server_expiry(record.expires_at) {
            Some(at) => Cmd::PexpireAt(key, i64::try_from(at).unwrap_or(i64::MAX)),
            None => Cmd::Persist(key),
        });
        cmds
    }

    /// `WRITE` arguments for a record: mode, now, `PEXPIREAT` time, then the fields.
    fn write_argv(record: &Record, mode: String, now: Timestamp) -> Vec<Value> {
        let fields = codec::encode(record);
        let mut argv = Vec::with_capacity(3 + 2 * fields.len());
        argv.push(text(mode));
        argv.push(text(now.as_millis().to_string()));
        argv.push(text(
            codec::server_expiry(record.expires_at).map(|t| t.to_string()).unwrap_or_default(),
        ));
        for (name, value) in fields {
            argv.push(text(name));
            argv.push(bytes(value));
        }
        argv
    }

    fn search_args(&self, ready: &Ready, query_text: String, limit: usize) -> Vec<Value> {
        let mut args = vec![text(ready.schema.name.clone()), text(query_text)];
        if let Some(ms) = self.query_timeout_ms() {
            args.extend([text("TIMEOUT"), text(ms.to_string())]);
        }
        args.extend([text("LIMIT"), text("0"), text(limit.to_string())]);
        args
    }

    fn query_timeout_ms(&self) -> Option<u64> {
        // TIMEOUT 0 means no limit to RediSearch: never send it.
        self.options.query_timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
    }

    /// Whether the server has an index called `name` (`FT.INFO`), without creating or
    /// checking it: for read-only tools that must not create an index by looking at it.
    ///
    /// # Errors
    /// The classified server error, other than the index being unknown.
    pub async fn index_exists(&self, name: &str) -> Result<bool, StorageError> {
        match self.ft_info(name, Operation::Describe).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::IndexMissing => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The hash fields a read by id asks for with `HMGET`, in order, once `ensure_index` has
    /// run: for measuring the server with the same commands (`redis-benchmark`).
    pub fn read_fields(&self) -> Option<Vec<String>> {
        self.ready(Operation::Get).ok().map(|r| r.read_names.clone())
    }

    /// The `FT.SEARCH` arguments (after the command name) that [`StorageBackend::search`]
    /// sends first for `q`, plan included: for measuring the server with the same commands
    /// (`redis-cli --pipe`), and for explaining a query. May read the size estimate of the
    /// query's pre-filter, as a search does.
    ///
    /// # Errors
    /// Those of [`StorageBackend::search`] before it sends the search.
    pub async fn search_command(&self, q: &VectorQuery) -> Result<Vec<Vec<u8>>, StorageError> {
        let op = Operation::Search;
        let ready = self.ready(op)?;
        q.validate(&ready.schema).map_err(|e| e.for_operation(op))?;
        let hybrid = self.choose_hybrid(&ready, q).await?;
        Ok(self
            .knn_args(&ready, q, hybrid, None)
            .into_iter()
            .map(|v| v.into_bytes().map(|b| b.to_vec()).unwrap_or_default())
            .collect())
    }

    /// The plan of one search (see [`QueryPlan`]).
    async fn choose_hybrid(&self, ready: &Ready, q: &VectorQuery) -> Result<Hybrid, StorageError> {
        let batches = |size: u32| Hybrid::Batches(size.max(u32::try_from(q.k).unwrap_or(u32::MAX)));
        Ok(match q.plan {
            QueryPlan::Server => Hybrid::Server,
            QueryPlan::BruteForce => Hybrid::AdhocBf,
            QueryPlan::Batches { size } => batches(size),
            QueryPlan::Auto => match ready.schema.vector.algorithm {
                // FLAT computes every distance anyway: the server's plan is as good.
                Algorithm::Flat => Hybrid::Server,
                Algorithm::Hnsw(_) => {
                    let prefilter =
                        query::knn_prefilter(&q.namespace, q.filter.as_ref(), None, false);
                    let passing = self.estimate(ready, prefilter).await?;
                    if passing < self.options.brute_force_below {
                        Hybrid::AdhocBf
                    } else {
                        let total = self.estimate(ready, "*".to_owned()).await?.max(1);
                        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                        if passing as f64 / total as f64 >= SERVER_PLAN_FROM {
                            Hybrid::Server
                        } else {
                            batches(self.options.batch_size)
                        }
                    }
                }
            },
        })
    }

    /// How many records match `prefilter` (namespace and filter, expired records included):
    /// from the cache when read within [`RedisBackendOptions::plan_estimate_ttl`], else with
    /// one `FT.SEARCH ... LIMIT 0 0`.
    async fn estimate(&self, ready: &Ready, prefilter: String) -> Result<u64, StorageError> {
        let op = Operation::Search;
        let ttl = self.options.plan_estimate_ttl;
        let lock = || self.estimates.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((n, at)) = lock().get(&prefilter)
            && at.elapsed() < ttl
        {
            return Ok(*n);
        }
        let mut args = self.search_args(ready, prefilter.clone(), 0);
        args.extend([text("DIALECT"), text("2")]);
        let n = match self.exec(op, "FT.SEARCH", args).await? {
            Value::Array(items) => items.first().and_then(Value::as_u64),
            other => other.as_u64(),
        }
        .ok_or_else(|| protocol(op, "FT.SEARCH did not return a count"))?;
        let mut cache = lock();
        if cache.len() >= PLAN_ESTIMATES_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
            if cache.len() >= PLAN_ESTIMATES_MAX {
                cache.clear();
            }
        }
        cache.insert(prefilter, (n, Instant::now()));
        Ok(n)
    }

    /// The arguments of one KNN `FT.SEARCH`.
    fn knn_args(
        &self,
        ready: &Ready,
        q: &VectorQuery,
        hybrid: Hybrid,
        live_at: Option<Timestamp>,
    ) -> Vec<Value> {
        let schema = &ready.schema;
        let ef = match (schema.vector.algorithm, hybrid) {
            (_, Hybrid::AdhocBf) | (Algorithm::Flat, _) => None,
            // Each batch is a graph search for `n` neighbours: unless the query asks for an
            // `EF_RUNTIME`, a search list longer than the batch is not worth its cost (see
            // DEFAULT_BATCH_SIZE).
            (Algorithm::Hnsw(p), Hybrid::Batches(n)) => {
                Some(q.ef_runtime.unwrap_or_else(|| p.ef_runtime.min(n)))
            }
            (Algorithm::Hnsw(p), _) => Some(q.ef_runtime.unwrap_or(p.ef_runtime)),
        };
        let knn =
            Knn { k: q.k, live_at, range: q.max_distance.is_some(), ef: ef.is_some(), hybrid };
        let mut args =
            self.search_args(ready, knn_query(&q.namespace, q.filter.as_ref(), knn), q.k);
        let mut params = vec![text("BLOB"), bytes(vector::to_le_bytes(&q.vector))];
        if let Some(ef) = ef {
            params.extend([text("EF"), text(ef.to_string())]);
        }
        if let Some(max) = q.max_distance {
            // The server computes distances in f32: widen its radius by a hair and apply the
            // exact threshold in `knn_hits`, on distances computed the way the in-process
            // backend does.
            let radius = f64::from(max) * (1.0 + 1e-5) + 1e-6;
            params.extend([text("RADIUS"), text(radius.to_string())]);
        }
        args.push(text("PARAMS"));
        args.push(text(params.len().to_string()));
        args.extend(params);
        let mut returned: Vec<String> = codec::record_fields(schema).collect();
        returned.push(codec::DIST.to_owned());
        args.extend([
            text("SORTBY"),
            text(codec::DIST),
            text("ASC"),
            text("VERBATIM"),
            text("RETURN"),
            text(returned.len().to_string()),
        ]);
        args.extend(returned.into_iter().map(text));
        args.extend([text("DIALECT"), text("2")]);
        args
    }

    /// The hits of a KNN reply, sorted by `(distance, id)` and cut at `k`, and how many
    /// expired records the reply held (dropped).
    fn knn_hits(
        ready: &Ready,
        q: &VectorQuery,
        reply: Value,
        now: Timestamp,
    ) -> Result<(Vec<SearchHit>, usize), StorageError> {
        let op = Operation::Search;
        let schema = &ready.schema;
        let Value::Array(items) = reply else {
            return Err(protocol(op, "FT.SEARCH did not return an array"));
        };
        let mut it = items.into_iter();
        it.next().and_then(|t| t.as_u64()).ok_or_else(|| protocol(op, "FT.SEARCH has no total"))?;
        let mut hits = Vec::with_capacity(q.k);
        let mut expired = 0;
        while let Some(key) = it.next() {
            let fields =
                it.next().ok_or_else(|| protocol(op, "FT.SEARCH result without fields"))?;
            let key = key.as_string().ok_or_else(|| protocol(op, "FT.SEARCH key is not text"))?;
            let Some((ns, id)) = ready.codec.parse(&key) else {
                return Err(protocol(op, "FT.SEARCH returned a key of another index"));
            };
            if ns != q.namespace {
                // The namespace clause makes this impossible; never pass on another's record.
                return Err(protocol(op, "FT.SEARCH returned a record of another namespace"));
            }
            let pairs = field_pairs(fields, op)?;
            if pairs.iter().all(|(name, _)| name == codec::DIST) {
                // The key is gone (expired, or deleted since the index matched it): the server
                // returns the document without its hash's fields. Treated as expired.
                expired += 1;
                continue;
            }
            let record = codec::decode(schema, &ns, &id, pairs, op)?;
            if codec::is_expired(record.expires_at, now) {
                expired += 1;
                continue;
            }
            let Some(v) = &record.vector else {
                return Err(protocol(op, "a search result has no vector"));
            };
            let distance = vector::distance(schema.vector.metric, &q.vector, v);
            if q.max_distance.is_some_and(|max| distance > max) {
                continue;
            }
            hits.push(SearchHit { record, distance });
        }
        hits.sort_by(|a, b| {
            a.distance.total_cmp(&b.distance).then_with(|| a.record.id.cmp(&b.record.id))
        });
        hits.truncate(q.k);
        Ok((hits, expired))
    }

    async fn ft_info(&self, name: &str, op: Operation) -> Result<Info, StorageError> {
        Ok(to_info(self.exec(op, "FT.INFO", vec![text(name)]).await?))
    }

    /// Compares an existing index with the wanted schema.
    fn compare(schema: &IndexSchema, info: Info) -> Result<IndexStatus, StorageError> {
        let existing = index::parse_info(&schema.name, info)?;
        let mut diff = schema.differences(&existing.schema);
        diff.extend(existing.problems);
        if diff.is_empty() { Ok(IndexStatus::Existing) } else { Err(schema.mismatch_error(&diff)) }
    }

    async fn check_on_timeout(&self) -> Result<(), StorageError> {
        let op = Operation::EnsureIndex;
        let reply =
            to_info(self.exec(op, "FT.CONFIG", vec![text("GET"), text("ON_TIMEOUT")]).await?);
        let policy = match &reply {
            Info::List(pairs) => pairs.iter().find_map(|p| match p {
                Info::List(kv) if kv.len() == 2 => match &kv[1] {
                    Info::Text(v) => Some(v.to_ascii_lowercase()),
                    Info::List(_) => None,
                },
                _ => None,
            }),
            Info::Text(_) => None,
        };
        if policy.as_deref() == Some("fail") {
            return Ok(());
        }
        let shown = policy.unwrap_or_else(|| "unknown".to_owned());
        match self.options.on_timeout {
            OnTimeoutPolicy::RequireFail => Err(StorageError::new(
                ErrorKind::Unsupported,
                op,
                format!(
                    "RediSearch ON_TIMEOUT is {shown:?}, engram needs \"fail\" so that a search timeout is an error instead of silently short results (FT.CONFIG SET ON_TIMEOUT FAIL)"
                ),
            )),
            OnTimeoutPolicy::SetFail => self
                .exec(op, "FT.CONFIG", vec![text("SET"), text("ON_TIMEOUT"), text("FAIL")])
                .await
                .map(drop)
                .map_err(|e| {
                    StorageError::new(
                        e.kind(),
                        op,
                        format!(
                            "RediSearch ON_TIMEOUT is {shown:?} and setting it to FAIL was refused ({}); engram needs it so that a search timeout is an error instead of silently short results",
                            e.message()
                        ),
                    )
                }),
        }
    }

    /// Under [`Durability::WaitAof`], checks that the server accepts `WAITAOF` (it refuses it
    /// when `appendonly` is off), so that a misconfiguration fails when the index is ensured
    /// instead of failing every write.
    async fn check_durability(&self) -> Result<(), StorageError> {
        let op = Operation::EnsureIndex;
        let (durability, wait) = self.conn.durability();
        if durability != Durability::WaitAof {
            return Ok(());
        }
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let refused = |why: String| {
            StorageError::new(
                ErrorKind::Unsupported,
                op,
                format!(
                    "redis.durability is \"waitaof\" but the server cannot confirm fsyncs ({why}); it needs appendonly yes, or set redis.durability = \"none\""
                ),
            )
        };
        match self.exec(op, "WAITAOF", vec![text("1"), text("0"), text(ms.to_string())]).await {
            Ok(Value::Array(counts))
                if counts.first().and_then(Value::as_i64).is_some_and(|n| n >= 1) =>
            {
                Ok(())
            }
            Ok(_) => Err(refused(format!("WAITAOF confirmed no local fsync within {ms} ms"))),
            Err(e) if e.kind() == ErrorKind::Unexpected => Err(refused(e.message().to_owned())),
            Err(e) => Err(e),
        }
    }

    /// Whether an error says the index this backend serves has vanished from the server.
    fn index_vanished(&self, e: &StorageError) -> bool {
        e.kind() == ErrorKind::IndexMissing && self.ready(e.operation()).is_ok()
    }

    /// Runs `attempt`; when it fails because the server lost the index, re-creates the index
    /// once and runs `attempt` again.
    async fn once_more_if_index_vanished<T, F, Fut>(
        &self,
        mut attempt: F,
    ) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StorageError>>,
    {
        match attempt().await {
            Err(e) if self.index_vanished(&e) => {
                self.reensure(e.operation()).await?;
                attempt().await
            }
            other => other,
        }
    }

    /// Re-creates the index this backend serves, after the server lost it.
    async fn reensure(&self, op: Operation) -> Result<(), StorageError> {
        let ready = self.ready(op)?;
        tracing::warn!(
            index = %ready.schema.name,
            "the index is missing on the server (restarted empty, or dropped); re-creating it once"
        );
        self.ensure_index(&ready.schema).await.map(drop).map_err(|e| e.for_operation(op))
    }

    /// Parses a scan cursor: `"{scan cursor}"` or `"{scan cursor}:{last id}"` when the page
    /// stopped inside the keys of one `SCAN` step.
    fn parse_cursor(c: &str, op: Operation) -> Result<(u64, Option<RecordId>), StorageError> {
        let bad = || {
            StorageError::new(
                ErrorKind::InvalidInput,
                op,
                "the scan cursor was not made by this backend",
            )
        };
        let (num, after) = match c.split_once(':') {
            Some((n, id)) => (n, Some(RecordId::new(id).map_err(|_| bad())?)),
            None => (c, None),
        };
        Ok((num.parse().map_err(|_| bad())?, after))
    }

    async fn scan_step(
        &self,
        cursor: u64,
        pattern: &str,
        count: usize,
        op: Operation,
    ) -> Result<(u64, Vec<String>), StorageError> {
        let reply = self
            .exec(
                op,
                "SCAN",
                vec![
                    text(cursor.to_string()),
                    text("MATCH"),
                    text(pattern),
                    text("COUNT"),
                    text(count.to_string()),
                    text("TYPE"),
                    text("hash"),
                ],
            )
            .await?;
        let mut parts = match reply {
            Value::Array(p) if p.len() == 2 => p.into_iter(),
            _ => return Err(protocol(op, "SCAN did not return a cursor and keys")),
        };
        let next = parts
            .next()
            .and_then(|v| v.as_u64())
            .ok_or_else(|| protocol(op, "SCAN cursor is not a number"))?;
        let keys = match parts.next() {
            Some(Value::Array(keys)) => keys.into_iter().filter_map(|k| k.as_string()).collect(),
            _ => return Err(protocol(op, "SCAN keys are not an array")),
        };
        Ok((next, keys))
    }
}

fn outcome(o: Option<Result<Value, FredError>>, op: Operation) -> ItemOutcome<Value> {
    match o {
        Some(Ok(v)) => ItemOutcome::Succeeded(v),
        Some(Err(e)) => ItemOutcome::Failed(classify(op, e)),
        None => ItemOutcome::NotAttempted,
    }
}

/// Records written by one transaction of a batch.
///
/// Unconditional writes of a batch go as `MULTI`, each record's commands, `EXEC`: the server
/// runs a transaction whole or not at all (a connection cut before `EXEC` discards it, a
/// command refused when queued, such as `OOM` above `maxmemory`, aborts it), and a record's
/// commands cost it what a bare `HSET` does, where the Lua write script costs half as much
/// again (see docs/performance.md). fred flushes the socket after `MULTI` and `EXEC`, so
/// several records share them. A transaction also holds the server for its whole run: 16
/// records into an HNSW graph take it about 8 ms, the time a pipeline of such `HSET`s holds
/// it between reads anyway.
const RECORDS_PER_TRANSACTION: usize = 16;

/// `MULTI`, the commands of each record (emptied from `records`), `EXEC`; routed by the first
/// record's key (the records of one index live on one server).
fn transaction(records: &mut [Vec<Cmd>]) -> Vec<Cmd> {
    let slot = records
        .first()
        .and_then(|r| r.first())
        .and_then(Cmd::key)
        .map_or(0, |k| fred::util::redis_keyslot(k.as_bytes()));
    let mut cmds = Vec::with_capacity(2 + records.iter().map(Vec::len).sum::<usize>());
    cmds.push(Cmd::Transaction("MULTI", slot));
    for r in records {
        cmds.append(r);
    }
    cmds.push(Cmd::Transaction("EXEC", slot));
    cmds
}

/// Whether an error of a write transaction holds for every record in it, so that running
/// each record again alone would only repeat it: the connection or the whole transaction
/// failed (lost, timed out, refused when queued), rather than one record's command.
fn fails_every_record(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Unavailable
            | ErrorKind::Timeout
            | ErrorKind::Backpressure
            | ErrorKind::OutOfMemory
            | ErrorKind::PermissionDenied
            | ErrorKind::Auth
    )
}

/// Most `SCAN` calls one `scan` page makes before returning a short (maybe empty) page.
const MAX_SCAN_STEPS: usize = 16;

/// The reads, which the boxed calls of [`StorageBackend`] run too.
impl UnboxedBackend for RedisBackend {
    async fn get_batch_unboxed(
        &self,
        namespace: &Namespace,
        ids: &[RecordId],
    ) -> BatchReport<Option<Record>> {
        let op = Operation::Get;
        let ready = match self.batch_ready(op, ids.len()) {
            Ok(r) => r,
            Err(report) => return report,
        };
        let keys = ids.iter().map(|id| ready.codec.key(namespace, id)).collect();
        let outcomes = self.hmget_each(keys, &ready.read_fields).await;
        let now = Timestamp::now();
        let items = ids
            .iter()
            .zip(outcomes)
            .map(|(id, o)| {
                outcome(o, op).and_then(|v| {
                    let decoded = read_values(v, &ready.read_names, op).and_then(|fields| {
                        if fields.is_empty() {
                            return Ok(None);
                        }
                        codec::decode(&ready.schema, namespace, id, fields, op).map(Some)
                    });
                    match decoded {
                        Ok(Some(r)) if codec::is_expired(r.expires_at, now) => {
                            ItemOutcome::Succeeded(None)
                        }
                        Ok(r) => ItemOutcome::Succeeded(r),
                        Err(e) => ItemOutcome::Failed(e),
                    }
                })
            })
            .collect();
        BatchReport::new(items)
    }

    async fn search_unboxed(&self, q: &VectorQuery) -> Result<Vec<SearchHit>, StorageError> {
        let attempt = || async {
            let op = Operation::Search;
            let ready = self.ready(op)?;
            let schema = &ready.schema;
            q.validate(schema).map_err(|e| e.for_operation(op))?;
            let hybrid = self.choose_hybrid(&ready, q).await?;
            // First without the expiry clause, which costs the server a numeric-range
            // iterator over every live record of the index: expired records that Redis has
            // not deleted yet are dropped here. Only when one of them came back (so fewer
            // than the true top `k` may be left) is the search run again with the clause.
            let mut now = Timestamp::now();
            let mut live_at = None;
            loop {
                let args = self.knn_args(&ready, q, hybrid, live_at);
                let reply = self.exec(op, "FT.SEARCH", args).await?;
                let (hits, expired) = Self::knn_hits(&ready, q, reply, now)?;
                if expired == 0 || live_at.is_some() {
                    return Ok(hits);
                }
                now = Timestamp::now();
                live_at = Some(now);
            }
        };
        self.once_more_if_index_vanished(attempt).await
    }

    fn into_dyn(self: Arc<Self>) -> Arc<dyn StorageBackend> {
        self
    }
}

#[async_trait]
impl StorageBackend for RedisBackend {
    async fn ensure_index(&self, schema: &IndexSchema) -> Result<IndexStatus, StorageError> {
        let op = Operation::EnsureIndex;
        schema.validate()?;
        if schema.vector.vector_type != VectorType::Float32 {
            return Err(StorageError::new(
                ErrorKind::Unsupported,
                op,
                "the Redis backend stores FLOAT32 vectors only; FLOAT16 is not supported yet",
            ));
        }
        if let Ok(current) = self.ready(op)
            && current.schema.name != schema.name
        {
            return Err(schema.mismatch_error(&[format!(
                "index name: wanted {:?}, this backend serves {:?}",
                schema.name, current.schema.name
            )]));
        }
        let status = match self.ft_info(&schema.name, op).await {
            Ok(info) => Self::compare(schema, info)?,
            Err(e) if e.kind() == ErrorKind::IndexMissing => {
                let args = index::create_args(schema).into_iter().map(text).collect();
                match self.exec_raw("FT.CREATE", args).await {
                    Ok(_) => IndexStatus::Created,
                    // Another process created it between FT.INFO and FT.CREATE: compare.
                    Err(e) if is_index_exists(&e) => {
                        Self::compare(schema, self.ft_info(&schema.name, op).await?)?
                    }
                    Err(e) => return Err(classify(op, e)),
                }
            }
            Err(e) => return Err(e),
        };
        self.check_on_timeout().await?;
        self.check_durability().await?;
        self.load_script(&self.write, op).await?;
        self.load_script(&self.touch, op).await?;
        let no_transactions = self.check_transactions(op).await?;
        let read_names = codec::read_fields(schema);
        *self.ready.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Arc::new(Ready {
                schema: schema.clone(),
                codec: KeyCodec::new(schema.key_prefix.clone()),
                read_fields: read_names.iter().map(|n| Key::from(n.as_str())).collect(),
                read_names,
                no_transactions,
            }));
        Ok(status)
    }

    async fn put_batch(&self, records: Vec<Record>) -> BatchReport<()> {
        self.put_batch_borrowed(&records).await
    }

    async fn put_batch_borrowed(&self, records: &[Record]) -> BatchReport<()> {
        let op = Operation::Put;
        let ready = match self.batch_ready(op, records.len()) {
            Ok(r) => r,
            Err(report) => return report,
        };
        if let Some(e) = &ready.no_transactions {
            return BatchReport::all_failed(records.len(), e);
        }
        let mut items: Vec<ItemOutcome<()>> = Vec::with_capacity(records.len());
        let mut calls = Vec::new();
        let mut positions = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match r.validate(&ready.schema) {
                Ok(()) => {
                    let key = ready.codec.key(&r.namespace, &r.id);
                    calls.push(Self::record_commands(&ready.schema, r, key));
                    positions.push(i);
                    items.push(ItemOutcome::NotAttempted);
                }
                // Invalid records fail alone, without being sent.
                Err(e) => items.push(ItemOutcome::Failed(e.for_operation(op))),
            }
        }
        // Transactions of up to RECORDS_PER_TRANSACTION records, pipelined `batch_chunk`
        // records at a time.
        let group = RECORDS_PER_TRANSACTION.min(self.options.batch_chunk).max(1);
        let groups: Vec<Vec<Cmd>> = calls.chunks_mut(group).map(transaction).collect();
        let per_chunk = self.options.batch_chunk / group;
        // A transaction's reply is the array of its commands' replies.
        let written = |o| {
            outcome(o, op).and_then(|v| match v {
                Value::Array(_) => ItemOutcome::Succeeded(()),
                _ => ItemOutcome::Failed(protocol(op, "EXEC of a write gave an unexpected reply")),
            })
        };
        let mut again = Vec::new();
        let sizes = positions.chunks(group).map(<[usize]>::len).collect::<Vec<_>>();
        let mut at = 0;
        for (size, o) in sizes.into_iter().zip(self.pipelined(groups, per_chunk).await) {
            let members = &positions[at..at + size];
            at += size;
            match written(o) {
                ItemOutcome::Succeeded(()) => {
                    members.iter().for_each(|&p| items[p] = ItemOutcome::Succeeded(()));
                }
                // A command of the transaction failed on the server (a key of another type):
                // the others ran. Each record again on its own tells which failed.
                ItemOutcome::Failed(e) if size > 1 && !fails_every_record(e.kind()) => {
                    again.extend_from_slice(members);
                }
                ItemOutcome::Failed(e) => {
                    members.iter().for_each(|&p| items[p] = ItemOutcome::Failed(e.duplicate()));
                }
                ItemOutcome::NotAttempted => {}
            }
        }
        if !again.is_empty() {
            let singles = again
                .iter()
                .map(|&p| {
                    let r = &records[p];
                    let key = ready.codec.key(&r.namespace, &r.id);
                    transaction(&mut [Self::record_commands(&ready.schema, r, key)])
                })
                .collect();
            let outcomes = self.pipelined(singles, self.options.batch_chunk).await;
            for (&p, o) in again.iter().zip(outcomes) {
                items[p] = written(o);
            }
        }
        BatchReport::new(items)
    }

    async fn get_batch(
        &self,
        namespace: &Namespace,
        ids: &[RecordId],
    ) -> BatchReport<Option<Record>> {
        self.get_batch_unboxed(namespace, ids).await
    }

    async fn delete_batch(&self, namespace: &Namespace, ids: &[RecordId]) -> BatchReport<bool> {
        let op = Operation::Delete;
        let ready = match self.batch_ready(op, ids.len()) {
            Ok(r) => r,
            Err(report) => return report,
        };
        let commands =
            ids.iter().map(|id| vec![Cmd::Del(ready.codec.key(namespace, id))]).collect();
        let items = self
            .pipelined(commands, self.options.batch_chunk)
            .await
            .into_iter()
            .map(|o| {
                outcome(o, op).and_then(|v| match v.as_u64() {
                    Some(n) => ItemOutcome::Succeeded(n > 0),
                    None => ItemOutcome::Failed(protocol(op, "DEL did not return a count")),
                })
            })
            .collect();
        BatchReport::new(items)
    }

    async fn search(&self, q: &VectorQuery) -> Result<Vec<SearchHit>, StorageError> {
        self.search_unboxed(q).await
    }

    async fn find(
        &self,
        namespace: &Namespace,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        let attempt = || async {
            let op = Operation::Find;
            check_find_limit(limit).map_err(|e| e.for_operation(op))?;
            let ready = self.ready(op)?;
            filter.validate(&ready.schema).map_err(|e| e.for_operation(op))?;
            // FT.AGGREGATE sorts by key (`__key`, the same order as ids under one namespace
            // prefix) and cuts at `limit`; it loads hash values as C strings, which would cut a
            // vector or payload at its first zero byte, so the records are read by key after it.
            let query_text = format!(
                "{} {}",
                query::scope(namespace, Timestamp::now()),
                query::render_filter(filter)
            );
            let mut args = vec![text(ready.schema.name.clone()), text(query_text)];
            args.extend(["LOAD", "1", "@__key", "SORTBY", "2", "@__key", "ASC", "MAX"].map(text));
            args.push(text(limit.to_string()));
            if let Some(ms) = self.query_timeout_ms() {
                args.extend([text("TIMEOUT"), text(ms.to_string())]);
            }
            args.extend([text("DIALECT"), text("2")]);
            let reply = self.exec(op, "FT.AGGREGATE", args).await?;
            let Value::Array(rows) = reply else {
                return Err(protocol(op, "FT.AGGREGATE did not return an array"));
            };
            let mut ids = Vec::with_capacity(limit);
            for row in rows.into_iter().skip(1) {
                let key = field_pairs(row, op)?
                    .into_iter()
                    .find(|(k, _)| k == "__key")
                    .and_then(|(_, v)| String::from_utf8(v).ok())
                    .ok_or_else(|| protocol(op, "FT.AGGREGATE row without its key"))?;
                match ready.codec.parse(&key) {
                    Some((ns, id)) if &ns == namespace => ids.push(id),
                    _ => {
                        return Err(protocol(
                            op,
                            "FT.AGGREGATE returned a key of another namespace",
                        ));
                    }
                }
            }
            let mut records = Vec::with_capacity(ids.len());
            for item in self.get_batch(namespace, &ids).await.items {
                match item {
                    // Deleted or expired since the aggregate: not a match any more.
                    ItemOutcome::Succeeded(r) => records.extend(r),
                    ItemOutcome::Failed(e) => return Err(e.for_operation(op)),
                    ItemOutcome::NotAttempted => {
                        return Err(StorageError::new(
                            ErrorKind::Unavailable,
                            op,
                            "reading the records found was not attempted",
                        ));
                    }
                }
            }
            records.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(records)
        };
        self.once_more_if_index_vanished(attempt).await
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64, StorageError> {
        let attempt = || async {
            let op = Operation::Count;
            let ready = self.ready(op)?;
            let mut args = self.search_args(&ready, query::scope(namespace, Timestamp::now()), 0);
            args.extend([text("DIALECT"), text("2")]);
            let reply = self.exec(op, "FT.SEARCH", args).await?;
            match reply {
                Value::Array(items) => items.first().and_then(Value::as_u64),
                other => other.as_u64(),
            }
            .ok_or_else(|| protocol(op, "FT.SEARCH did not return a count"))
        };
        self.once_more_if_index_vanished(attempt).await
    }

    async fn scan(
        &self,
        namespace: &Namespace,
        cursor: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StorageError> {
        let op = Operation::Scan;
        check_scan_limit(limit).map_err(|e| e.for_operation(op))?;
        let (mut cursor, mut after) = match &cursor {
            None => (0, None),
            Some(ScanCursor(c)) => Self::parse_cursor(c, op)?,
        };
        let ready = self.ready(op)?;
        let prefix = ready.codec.namespace_prefix(namespace);
        let pattern = format!("{prefix}*");
        let mut ids: Vec<RecordId> = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..MAX_SCAN_STEPS {
            let (next, keys) = self.scan_step(cursor, &pattern, limit.max(100), op).await?;
            // Sorted, so that a page that stops inside this step can resume after its last id
            // by running the same step again.
            let mut step: Vec<RecordId> = keys
                .iter()
                .filter_map(|k| ready.codec.parse(k))
                .filter(|(ns, _)| ns == namespace)
                .map(|(_, id)| id)
                .filter(|id| after.as_ref().is_none_or(|a| id > a))
                .collect();
            step.sort();
            step.dedup();
            for id in step {
                if ids.len() == limit {
                    let last = ids.last().map(|l| l.as_str().to_owned()).unwrap_or_default();
                    return Ok(ScanPage {
                        ids,
                        next: Some(ScanCursor(format!("{cursor}:{last}"))),
                    });
                }
                // SCAN may return a key twice; never within one page.
                if seen.insert(id.clone()) {
                    ids.push(id);
                }
            }
            after = None;
            cursor = next;
            if cursor == 0 {
                return Ok(ScanPage { ids, next: None });
            }
            if ids.len() == limit {
                break;
            }
        }
        Ok(ScanPage { ids, next: Some(ScanCursor(cursor.to_string())) })
    }

    async fn touch(
        &self,
        namespace: &Namespace,
        id: &RecordId,
        now: Timestamp,
        ttl: Option<Duration>,
    ) -> Result<Option<Touched>, StorageError> {
        let op = Operation::Touch;
        let ready = self.ready(op)?;
        let new_exp = ttl.map(|t| now.plus(t));
        let argv = vec![
            text(now.as_millis().to_string()),
            text(Timestamp::now().as_millis().to_string()),
            text(new_exp.map(|t| codec::encode_expiry(Some(t))).unwrap_or_default()),
            text(codec::server_expiry(new_exp).map(|t| t.to_string()).unwrap_or_default()),
        ];
        let reply = self.run_script(&self.touch, ready.codec.key(namespace, id), argv, op).await?;
        let items = match reply {
            Value::Null => return Ok(None),
            Value::Array(items) if items.len() == 2 => items,
            _ => return Err(protocol(op, "the touch script gave an unexpected reply")),
        };
        let count = items[0].as_u64().ok_or_else(|| protocol(op, "touch count is not a number"))?;
        let exp = items[1].as_string().ok_or_else(|| protocol(op, "touch expiry is not text"))?;
        let expires_at = if exp == codec::NO_EXPIRY {
            None
        } else {
            Some(Timestamp(exp.parse().map_err(|_| protocol(op, "touch expiry is not a time"))?))
        };
        Ok(Some(Touched { access: AccessStats { count, last_access: Some(now) }, expires_at }))
    }

    async fn compare_and_set(
        &self,
        record: Record,
        expected: Option<u64>,
    ) -> Result<(), StorageError> {
        let op = Operation::CompareAndSet;
        let ready = self.ready(op)?;
        record.validate(&ready.schema).map_err(|e| e.for_operation(op))?;
        check_cas_version(&record, expected)?;
        let mode = expected.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let argv = Self::write_argv(&record, mode, Timestamp::now());
        let key = ready.codec.key(&record.namespace, &record.id);
        let reply = self.run_script(&self.write, key, argv, op).await?;
        let items = match reply {
            Value::Array(items) if !items.is_empty() => items,
            _ => return Err(protocol(op, "the write script gave an unexpected reply")),
        };
        match (items[0].as_u64(), items.get(1)) {
            (Some(1), _) => Ok(()),
            (Some(0), None) => Err(cas_conflict(&record.id, None, expected)),
            (Some(0), Some(v)) => Err(cas_conflict(&record.id, v.as_u64(), expected)),
            _ => Err(protocol(op, "the write script gave an unexpected reply")),
        }
    }

    async fn ping(&self) -> Result<Duration, StorageError> {
        self.conn.ping().await
    }

    /// A read of up to one chunk of ids: one `HMGET` per id, all written on the call's first
    /// poll, each ended by the client after `redis.command_timeout`; what follows (decoding)
    /// waits for nothing. Other calls run several commands one after another (a script
    /// reloaded, a plan's estimate, chunks in turn), so they are not bounded here.
    fn call_limit(&self, op: Operation, items: usize) -> Option<Duration> {
        (op == Operation::Get && items <= self.options.batch_chunk)
            .then(|| self.conn.command_timeout())
    }

    async fn describe(&self) -> Result<BackendInfo, StorageError> {
        let op = Operation::Describe;
        let server = self.conn.fetch_server_info().await?;
        let mut details: Vec<(String, String)> = Vec::new();
        details.push((
            "modules".into(),
            server.modules.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        ));
        let index = match self.ready(op) {
            Ok(ready) => {
                let info = index::top_level(self.ft_info(&ready.schema.name, op).await?)?;
                details.push(("index".into(), ready.schema.name.clone()));
                Some(index::stats(&info))
            }
            Err(_) => None,
        };
        for (section, keys) in [
            (
                fred::types::InfoKind::Memory,
                &["used_memory", "used_memory_human", "maxmemory", "maxmemory_policy"][..],
            ),
            (fred::types::InfoKind::Clients, &["connected_clients", "blocked_clients"][..]),
        ] {
            let text: String =
                self.conn.pool().info(Some(section)).await.map_err(|e| classify(op, e))?;
            for line in text.lines() {
                if let Some((k, v)) = line.split_once(':')
                    && keys.contains(&k)
                {
                    details.push((k.to_owned(), v.trim().to_owned()));
                }
            }
        }
        Ok(BackendInfo {
            backend: "redis",
            capabilities: Capabilities {
                durable: true,
                shared: true,
                approximate_knn: self
                    .ready(op)
                    .is_ok_and(|r| matches!(r.schema.vector.algorithm, Algorithm::Hnsw(_))),
            },
            server_version: Some(server.version),
            index,
            details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_cursors_round_trip_and_reject_foreign_ones() {
        let op = Operation::Scan;
        assert_eq!(RedisBackend::parse_cursor("0", op).unwrap(), (0, None));
        assert_eq!(
            RedisBackend::parse_cursor("17:a:b.c", op).unwrap(),
            (17, Some(RecordId::new("a:b.c").unwrap()))
        );
        for bad in ["", "x", "-1", "3:bad id", "3:"] {
            let e = RedisBackend::parse_cursor(bad, op).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn field_pairs_read_binary_values_that_look_like_text() {
        let v = Value::Array(vec![
            Value::from("__vec"),
            Value::from("\0\0\0\0"),
            Value::from("__payload"),
            Value::Bytes(Bytes::from_static(&[0xff, 0])),
        ]);
        let pairs = field_pairs(v, Operation::Get).unwrap();
        assert_eq!(pairs[0], ("__vec".to_owned(), vec![0, 0, 0, 0]));
        assert_eq!(pairs[1], ("__payload".to_owned(), vec![0xff, 0]));
        assert!(field_pairs(Value::Array(vec![Value::from("x")]), Operation::Get).is_err());
    }

    #[test]
    fn read_values_pair_present_fields_with_their_names() {
        let names: Vec<String> = ["__vec", "__exp", "__payload"].map(String::from).into();
        let v = Value::Array(vec![
            Value::from("\0\0\0\0"),
            Value::Null,
            Value::Bytes(Bytes::from_static(&[0xff, 0])),
        ]);
        let got = read_values(v, &names, Operation::Get).unwrap();
        assert_eq!(got, vec![("__vec", vec![0, 0, 0, 0]), ("__payload", vec![0xff, 0])]);
        // A key that does not exist: every value is nil.
        let missing = Value::Array(vec![Value::Null, Value::Null, Value::Null]);
        assert!(read_values(missing, &names, Operation::Get).unwrap().is_empty());
        let short = Value::Array(vec![Value::Null]);
        assert_eq!(
            read_values(short, &names, Operation::Get).unwrap_err().kind(),
            ErrorKind::Protocol
        );
    }
}

//! The `StorageBackend` trait: the minimal surface every backend provides, used as
//! `Arc<dyn StorageBackend>`, and `StorageBackendExt` with conveniences built on it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{ErrorKind, Operation, StorageError};
use crate::filter::Filter;
use crate::ids::{Namespace, RecordId};
use crate::record::{AccessStats, Record, Timestamp};
use crate::schema::IndexSchema;

/// Largest `k` of one search.
pub const MAX_K: usize = 10_000;
/// Largest page of one scan.
pub const MAX_SCAN_PAGE: usize = 10_000;
/// Largest batch of one call.
pub const MAX_BATCH: usize = 10_000;

/// The outcome of one item of a batch.
#[derive(Debug)]
pub enum ItemOutcome<T> {
    /// The item succeeded.
    Succeeded(T),
    /// The item failed with this error.
    Failed(StorageError),
    /// The item was never attempted (for example after the connection was lost).
    NotAttempted,
}

impl<T> ItemOutcome<T> {
    /// The value, when the item succeeded.
    pub fn ok(&self) -> Option<&T> {
        match self {
            ItemOutcome::Succeeded(v) => Some(v),
            _ => None,
        }
    }

    /// The error, when the item failed.
    pub fn err(&self) -> Option<&StorageError> {
        match self {
            ItemOutcome::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The value, or the item's error; an item never attempted is an
    /// [`ErrorKind::Unavailable`] error of `op` (the backend stopped before it).
    ///
    /// # Errors
    /// The failure, or the one of not being attempted.
    pub fn into_result(self, op: Operation) -> Result<T, StorageError> {
        match self {
            ItemOutcome::Succeeded(v) => Ok(v),
            ItemOutcome::Failed(e) => Err(e),
            ItemOutcome::NotAttempted => {
                Err(StorageError::new(ErrorKind::Unavailable, op, "the item was not attempted"))
            }
        }
    }

    /// `f` of the value when the item succeeded; a failed or unattempted item stays so.
    pub fn and_then<U>(self, f: impl FnOnce(T) -> ItemOutcome<U>) -> ItemOutcome<U> {
        match self {
            ItemOutcome::Succeeded(v) => f(v),
            ItemOutcome::Failed(e) => ItemOutcome::Failed(e),
            ItemOutcome::NotAttempted => ItemOutcome::NotAttempted,
        }
    }
}

/// Per-item results of a batch, in the order of the input.
#[derive(Debug)]
pub struct BatchReport<T> {
    /// One outcome per input item.
    pub items: Vec<ItemOutcome<T>>,
}

impl<T> BatchReport<T> {
    /// A report from outcomes.
    pub fn new(items: Vec<ItemOutcome<T>>) -> Self {
        Self { items }
    }

    /// A report where every one of `n` items failed with a copy of `error`'s kind and message
    /// (used when the whole call was refused, for example by an open breaker).
    pub fn all_failed(n: usize, error: &StorageError) -> Self {
        Self { items: (0..n).map(|_| ItemOutcome::Failed(error.duplicate())).collect() }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch was empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of items that succeeded.
    pub fn succeeded(&self) -> usize {
        self.items.iter().filter(|i| matches!(i, ItemOutcome::Succeeded(_))).count()
    }

    /// The failures with their positions.
    pub fn failures(&self) -> impl Iterator<Item = (usize, &StorageError)> {
        self.items.iter().enumerate().filter_map(|(i, o)| o.err().map(|e| (i, e)))
    }

    /// Positions of the items never attempted.
    pub fn not_attempted(&self) -> impl Iterator<Item = usize> + '_ {
        self.items
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, ItemOutcome::NotAttempted))
            .map(|(i, _)| i)
    }

    /// Whether every item succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.items.iter().all(|i| matches!(i, ItemOutcome::Succeeded(_)))
    }

    /// The values if every item succeeded, else the first error (or an error for an item
    /// that was not attempted).
    ///
    /// # Errors
    /// The first failure.
    pub fn into_result(self, op: Operation) -> Result<Vec<T>, StorageError> {
        self.items
            .into_iter()
            .enumerate()
            .map(|(i, o)| match o {
                ItemOutcome::NotAttempted => Err(StorageError::new(
                    ErrorKind::Unavailable,
                    op,
                    format!("item {i} of the batch was not attempted"),
                )),
                o => o.into_result(op),
            })
            .collect()
    }
}

/// How a backend should combine a search's pre-filter (namespace, liveness, filter) with the
/// vector index. A hint: it never changes which records match, only how they are found and,
/// for [`QueryPlan::Batches`], how close the results are to the exact top `k`.
///
/// The in-process backend always searches exactly and ignores it. The Redis backend maps it
/// to RediSearch's `HYBRID_POLICY` on HNSW indexes (FLAT indexes always use the server's plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueryPlan {
    /// The backend chooses per query from an estimate of how many records pass the filter:
    /// brute force over a small filtered set (exact), batches of approximate neighbours
    /// filtered as they come over a large one.
    #[default]
    Auto,
    /// Whatever the server decides (RediSearch's own plan, no `HYBRID_POLICY`).
    Server,
    /// Compute the distance of every record that passes the filter (exact; costs time in
    /// proportion to the number of such records).
    BruteForce,
    /// Ask the vector index for batches of `size` nearest records and filter each batch,
    /// until `k` pass (approximate, like the unfiltered search; fast when many records pass).
    /// Unless the query sets [`VectorQuery::ef_runtime`], an HNSW index searches each batch
    /// with the smaller of its `EF_RUNTIME` and `size`.
    Batches {
        /// Records per batch; at least `k` is used.
        size: u32,
    },
}

/// A k-nearest-neighbour search within one namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorQuery {
    /// The only namespace searched.
    pub namespace: Namespace,
    /// The query vector.
    pub vector: Vec<f32>,
    /// Number of neighbours wanted, 1 to [`MAX_K`].
    pub k: usize,
    /// Extra conditions on indexed fields.
    pub filter: Option<Filter>,
    /// HNSW candidate list size for this query (ignored by FLAT).
    pub ef_runtime: Option<u32>,
    /// Only results at this distance or closer.
    pub max_distance: Option<f32>,
    /// How the backend combines the filter with the vector index ([`QueryPlan::Auto`] unless
    /// set).
    pub plan: QueryPlan,
}

impl VectorQuery {
    /// A query for the `k` nearest records of `namespace`.
    pub fn new(namespace: Namespace, vector: Vec<f32>, k: usize) -> Self {
        Self {
            namespace,
            vector,
            k,
            filter: None,
            ef_runtime: None,
            max_distance: None,
            plan: QueryPlan::Auto,
        }
    }

    /// Sets the plan (see [`QueryPlan`]).
    pub fn with_plan(mut self, plan: QueryPlan) -> Self {
        self.plan = plan;
        self
    }

    /// Adds a filter.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Sets the distance threshold.
    pub fn with_max_distance(mut self, d: f32) -> Self {
        self.max_distance = Some(d);
        self
    }

    /// Sets EF_RUNTIME.
    pub fn with_ef_runtime(mut self, ef: u32) -> Self {
        self.ef_runtime = Some(ef);
        self
    }

    /// Checks the query against the schema before any I/O.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] or [`ErrorKind::DimensionMismatch`].
    pub fn validate(&self, schema: &IndexSchema) -> Result<(), StorageError> {
        let invalid =
            |m: String| Err(StorageError::new(ErrorKind::InvalidInput, Operation::Validate, m));
        if self.k == 0 || self.k > MAX_K {
            return invalid(format!("k is {}, expected 1 to {MAX_K}", self.k));
        }
        if let Some(ef) = self.ef_runtime
            && !(1..=4096).contains(&ef)
        {
            return invalid(format!("ef_runtime is {ef}, expected 1 to 4096"));
        }
        if let QueryPlan::Batches { size } = self.plan
            && size == 0
        {
            return invalid("the batch size of a batches plan is 0, expected at least 1".into());
        }
        if let Some(d) = self.max_distance
            && (!d.is_finite() || d < 0.0)
        {
            return invalid(format!("max_distance is {d}, expected a finite number of at least 0"));
        }
        crate::vector::validate(&self.vector, &schema.vector)?;
        if let Some(f) = &self.filter {
            f.validate(schema)?;
        }
        Ok(())
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The record found.
    pub record: Record,
    /// Its distance to the query (see [`crate::vector::distance`]).
    pub distance: f32,
}

/// Where a scan goes on; opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanCursor(pub String);

/// One page of a scan.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanPage {
    /// Ids of the page (a page may be shorter than asked, even empty, before the end).
    pub ids: Vec<RecordId>,
    /// Where to go on, or `None` at the end.
    pub next: Option<ScanCursor>,
}

/// Whether `ensure_index` created the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexStatus {
    /// The index did not exist and was created.
    Created,
    /// The index existed and matches the schema.
    Existing,
}

/// Statistics of the index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IndexStats {
    /// Documents in the index.
    pub documents: u64,
    /// Documents the server refused to index (bad vector bytes, for example).
    pub indexing_failures: u64,
    /// Fraction of the keyspace indexed so far, 0 to 1 (below 1 while indexing runs).
    pub percent_indexed: f64,
}

/// What a backend can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Data survives a restart of the process.
    pub durable: bool,
    /// Several processes can share the data.
    pub shared: bool,
    /// KNN results are approximate with HNSW.
    pub approximate_knn: bool,
}

/// What a backend is and how it is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendInfo {
    /// Backend name (`in-process`, `redis`).
    pub backend: &'static str,
    /// What it can do.
    pub capabilities: Capabilities,
    /// Server version, for backends with a server.
    pub server_version: Option<String>,
    /// Index statistics, once `ensure_index` has run.
    pub index: Option<IndexStats>,
    /// Further facts as name/value pairs (modules, memory, clients).
    pub details: Vec<(String, String)>,
}

/// Result of a successful `touch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touched {
    /// Statistics after the touch.
    pub access: AccessStats,
    /// Expiry after the touch.
    pub expires_at: Option<Timestamp>,
}

/// Storage of records in one index. Every call is scoped to one namespace.
///
/// Inputs are validated before any I/O; a batch reports per item. Implementations must be
/// safe to call concurrently.
#[async_trait]
pub trait StorageBackend: Send + Sync + fmt::Debug {
    /// Creates the index, or checks that an existing one matches `schema`; never drops or
    /// rewrites data. Later calls use this schema.
    ///
    /// # Errors
    /// [`ErrorKind::SchemaMismatch`] naming every difference, [`ErrorKind::InvalidInput`] for
    /// an invalid schema, or a backend error.
    async fn ensure_index(&self, schema: &IndexSchema) -> Result<IndexStatus, StorageError>;

    /// Writes whole records (insert or replace), each with its version and expiry as given.
    async fn put_batch(&self, records: Vec<Record>) -> BatchReport<()>;

    /// [`put_batch`](Self::put_batch) of records the caller keeps (a retry layer, which may
    /// need them again). The default copies them; a backend that only reads the records
    /// overrides it and saves the copy.
    async fn put_batch_borrowed(&self, records: &[Record]) -> BatchReport<()> {
        self.put_batch(records.to_vec()).await
    }

    /// Reads records by id: `Some` for a hit, `None` for a miss or an expired record.
    async fn get_batch(
        &self,
        namespace: &Namespace,
        ids: &[RecordId],
    ) -> BatchReport<Option<Record>>;

    /// Deletes records by id: `true` when the record existed.
    async fn delete_batch(&self, namespace: &Namespace, ids: &[RecordId]) -> BatchReport<bool>;

    /// The `k` nearest records of one namespace, sorted by distance then id.
    ///
    /// # Errors
    /// Input errors before any I/O, or a backend error.
    async fn search(&self, query: &VectorQuery) -> Result<Vec<SearchHit>, StorageError>;

    /// Records of the namespace that match `filter`, at most `limit` (1 to [`MAX_K`]),
    /// sorted by id. Backends that cannot search by filter alone answer
    /// [`ErrorKind::Unsupported`].
    ///
    /// # Errors
    /// Input errors before any I/O, [`ErrorKind::Unsupported`], or a backend error.
    async fn find(
        &self,
        namespace: &Namespace,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        let _ = (namespace, filter, limit);
        Err(StorageError::new(
            ErrorKind::Unsupported,
            Operation::Find,
            "this backend cannot search by filter alone",
        ))
    }

    /// Number of records in the namespace.
    ///
    /// # Errors
    /// A backend error.
    async fn count(&self, namespace: &Namespace) -> Result<u64, StorageError>;

    /// One page of at most `limit` ids of the namespace; start with `cursor = None`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a `limit` of 0 or above [`MAX_SCAN_PAGE`], or a
    /// backend error.
    async fn scan(
        &self,
        namespace: &Namespace,
        cursor: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StorageError>;

    /// Atomically counts an access, sets the last-access time to `now` and, when `ttl` is
    /// given, moves the expiry to `now + ttl`. `None` when the record does not exist.
    ///
    /// # Errors
    /// A backend error.
    async fn touch(
        &self,
        namespace: &Namespace,
        id: &RecordId,
        now: Timestamp,
        ttl: Option<Duration>,
    ) -> Result<Option<Touched>, StorageError>;

    /// Writes `record` only if the stored version is `expected` (`None`: only if absent).
    /// The record is stored with the version it carries, which must be greater than `expected`.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when the stored version differs, or a backend error.
    async fn compare_and_set(
        &self,
        record: Record,
        expected: Option<u64>,
    ) -> Result<(), StorageError>;

    /// A round trip; returns its latency.
    ///
    /// # Errors
    /// A backend error.
    async fn ping(&self) -> Result<Duration, StorageError>;

    /// Backend name, capabilities, server version and index statistics.
    ///
    /// # Errors
    /// A backend error.
    async fn describe(&self) -> Result<BackendInfo, StorageError>;

    /// How long a call of `op` on `items` items (1 for a call that is not a batch) can wait
    /// before the backend itself ends it with an [`ErrorKind::Timeout`] error, when the
    /// backend bounds such calls by itself; `None` (the default) when it does not.
    ///
    /// A limit given for `items` items must also hold for fewer. The timeout layer arms no
    /// timer of its own for a call the backend bounds within the layer's limit: the call
    /// ends by then either way, and a timer per call is a measurable part of a fast read's
    /// cost (docs/performance.md).
    fn call_limit(&self, op: Operation, items: usize) -> Option<Duration> {
        let _ = (op, items);
        None
    }
}

/// A [`StorageBackend`] of known type whose reads a layer can hold inside its own future.
///
/// Every [`StorageBackend`] method returns a boxed future, so that the trait works as
/// `Arc<dyn StorageBackend>`. A layer around the trait object (`Layer<P>`) therefore costs a
/// read a second box and a second dynamic call; a layer around a backend of known type
/// (`Layer<P, B>`, built by [`StackBuilder::new`](crate::layers::StackBuilder::new) from an
/// `Arc<B>`) calls the methods below instead and holds their futures unboxed, so that a read
/// through the whole stack allocates and dispatches once, as a read of the bare backend does
/// (what that saves on a get by id against Redis: docs/performance.md).
///
/// The defaults are the boxed calls of [`StorageBackend`]; a backend overrides the methods
/// it can serve with a future of its own, and they must behave exactly as the boxed calls.
pub trait UnboxedBackend: StorageBackend {
    /// [`StorageBackend::get_batch`].
    fn get_batch_unboxed<'a>(
        &'a self,
        namespace: &'a Namespace,
        ids: &'a [RecordId],
    ) -> impl Future<Output = BatchReport<Option<Record>>> + Send + 'a {
        self.get_batch(namespace, ids)
    }

    /// [`StorageBackend::search`].
    fn search_unboxed<'a>(
        &'a self,
        query: &'a VectorQuery,
    ) -> impl Future<Output = Result<Vec<SearchHit>, StorageError>> + Send + 'a {
        self.search(query)
    }

    /// The backend as a trait object.
    fn into_dyn(self: Arc<Self>) -> Arc<dyn StorageBackend>;
}

/// The trait object: every call boxed.
impl UnboxedBackend for dyn StorageBackend {
    fn into_dyn(self: Arc<Self>) -> Arc<dyn StorageBackend> {
        self
    }
}

/// Conveniences over [`StorageBackend`], for every backend.
#[async_trait]
pub trait StorageBackendExt: StorageBackend {
    /// Writes one record.
    ///
    /// # Errors
    /// The item's error.
    async fn put(&self, record: Record) -> Result<(), StorageError> {
        single(self.put_batch(vec![record]).await, Operation::Put)
    }

    /// Reads one record.
    ///
    /// # Errors
    /// The item's error.
    async fn get(
        &self,
        namespace: &Namespace,
        id: &RecordId,
    ) -> Result<Option<Record>, StorageError> {
        single(self.get_batch(namespace, std::slice::from_ref(id)).await, Operation::Get)
    }

    /// Deletes one record; `true` when it existed.
    ///
    /// # Errors
    /// The item's error.
    async fn delete(&self, namespace: &Namespace, id: &RecordId) -> Result<bool, StorageError> {
        single(self.delete_batch(namespace, std::slice::from_ref(id)).await, Operation::Delete)
    }

    /// Every id of the namespace, page by page.
    ///
    /// # Errors
    /// The first failing page's error.
    async fn scan_all(
        &self,
        namespace: &Namespace,
        page: usize,
    ) -> Result<Vec<RecordId>, StorageError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let p = self.scan(namespace, cursor, page).await?;
            out.extend(p.ids);
            match p.next {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }
}

impl<T: StorageBackend + ?Sized> StorageBackendExt for T {}

fn single<T>(report: BatchReport<T>, op: Operation) -> Result<T, StorageError> {
    let mut items = report.into_result(op)?;
    items.pop().ok_or_else(|| {
        StorageError::new(ErrorKind::Protocol, op, "the backend returned no result for one item")
    })
}

/// Checks a batch's size.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] above [`MAX_BATCH`].
pub fn check_batch_len(n: usize) -> Result<(), StorageError> {
    if n > MAX_BATCH {
        return Err(StorageError::new(
            ErrorKind::InvalidInput,
            Operation::Validate,
            format!("batch has {n} items, at most {MAX_BATCH} allowed"),
        ));
    }
    Ok(())
}

/// Checks the limit of a `find`.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for 0 or above [`MAX_K`].
pub fn check_find_limit(limit: usize) -> Result<(), StorageError> {
    if limit == 0 || limit > MAX_K {
        return Err(StorageError::new(
            ErrorKind::InvalidInput,
            Operation::Validate,
            format!("find limit is {limit}, expected 1 to {MAX_K}"),
        ));
    }
    Ok(())
}

/// Checks a scan page size.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for 0 or above [`MAX_SCAN_PAGE`].
pub fn check_scan_limit(limit: usize) -> Result<(), StorageError> {
    if limit == 0 || limit > MAX_SCAN_PAGE {
        return Err(StorageError::new(
            ErrorKind::InvalidInput,
            Operation::Validate,
            format!("scan page size is {limit}, expected 1 to {MAX_SCAN_PAGE}"),
        ));
    }
    Ok(())
}

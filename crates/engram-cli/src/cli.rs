//! The command line: every command, option and its help text (clap derive).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// engram: agent memory on Redis Stack.
///
/// Configuration: defaults < FILE (--config or $ENGRAM_CONFIG) < ENGRAM__SECTION__KEY
/// environment variables < REDIS_URL. Exit codes: 0 ok, 1 other failure, 2 bad input or
/// configuration, 3 server unreachable, module missing or index schema mismatch (`health`:
/// 0 healthy, 1 degraded, 2 unhealthy).
#[derive(Debug, Parser)]
#[command(name = "engram", version, max_term_width = 100)]
pub struct Cli {
    /// Configuration file (TOML); default: $ENGRAM_CONFIG when set.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text (errors too).
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store a memory.
    Remember(RememberArgs),
    /// Find the memories nearest to a text or a vector.
    Recall(RecallArgs),
    /// Read one memory by id (counts as an access and refreshes its TTL, unless --peek).
    Get(GetArgs),
    /// Delete memories by id.
    Forget(ForgetArgs),
    /// List the memories of a namespace, page by page.
    List(ListArgs),
    /// Operation counts and latencies of this process, circuit breaker, index documents.
    Stats(StatsArgs),
    /// Probe the server and the index: exit 0 healthy, 1 degraded, 2 unhealthy.
    Health(HealthArgs),
    /// Serve Prometheus metrics at observability.metrics_address until interrupted.
    ServeMetrics(ServeMetricsArgs),
    /// Create or check the index (`ensure`), or show its schema and statistics (`describe`).
    Index {
        /// What to do.
        #[command(subcommand)]
        action: IndexAction,
    },
    /// Import memories from JSON lines or from the benchmark dataset format.
    Import(ImportArgs),
    /// Check a configuration file and print the effective configuration (secrets redacted).
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// A scripted agent session on a built-in corpus (what `cargo xtask demo` runs).
    Demo(crate::demo::DemoArgs),
    /// End-to-end benchmark against Redis Stack (what `cargo xtask bench` runs).
    Bench(crate::bench::BenchArgs),
}

/// Memory types on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TypeArg {
    /// What the agent noticed recently.
    ShortTerm,
    /// What the agent should keep.
    LongTerm,
    /// Scratch state of the task at hand.
    Working,
    /// What happened, in order.
    Episodic,
    /// Facts and knowledge.
    Semantic,
}

impl From<TypeArg> for engram_memory::MemoryType {
    fn from(t: TypeArg) -> Self {
        use engram_memory::MemoryType as M;
        match t {
            TypeArg::ShortTerm => M::ShortTerm,
            TypeArg::LongTerm => M::LongTerm,
            TypeArg::Working => M::Working,
            TypeArg::Episodic => M::Episodic,
            TypeArg::Semantic => M::Semantic,
        }
    }
}

/// Options of `remember`.
#[derive(Debug, Args)]
pub struct RememberArgs {
    /// What to remember.
    pub content: String,
    /// Namespace (an agent, a user, a tenant).
    #[arg(short, long)]
    pub namespace: String,
    /// Memory type.
    #[arg(short = 't', long = "type", value_enum, default_value = "short-term")]
    pub memory_type: TypeArg,
    /// Importance, 0 to 1.
    #[arg(short, long, default_value_t = 0.5)]
    pub importance: f32,
    /// A tag (repeat for several).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Metadata as KEY=VALUE (repeat; VALUE is parsed as JSON when it can be, else text).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Use this id instead of a fresh one (an existing entry with it is replaced).
    #[arg(long)]
    pub id: Option<String>,
    /// Expire after this long (`90s`, `4h`) instead of the type's TTL.
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
    /// The embedding as a JSON array of numbers, from FILE or `-` for stdin; default: the
    /// built-in lexical embedder (a stand-in for demos, not a language model).
    #[arg(long, value_name = "FILE")]
    pub embedding_file: Option<PathBuf>,
}

/// Options of `recall`.
#[derive(Debug, Args)]
pub struct RecallArgs {
    /// The query text (embedded with the built-in lexical embedder); omit with --vector-file.
    #[arg(required_unless_present = "vector_file")]
    pub query: Option<String>,
    /// Namespace searched (only this one).
    #[arg(short, long)]
    pub namespace: String,
    /// Number of results, 1 to 1000.
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// The query vector as a JSON array of numbers, from FILE or `-` for stdin.
    #[arg(long, value_name = "FILE", conflicts_with = "query")]
    pub vector_file: Option<PathBuf>,
    /// Only this type (repeat for any of several).
    #[arg(short = 't', long = "type", value_enum)]
    pub types: Vec<TypeArg>,
    /// Only entries with this tag (repeat for any of several).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only entries at least this important.
    #[arg(long)]
    pub min_importance: Option<f32>,
    /// Only entries at most this important.
    #[arg(long)]
    pub max_importance: Option<f32>,
    /// Only entries whose content has every word of this text (needs index.full_text = true).
    #[arg(long)]
    pub text: Option<String>,
    /// Only results at this distance or closer.
    #[arg(long)]
    pub max_distance: Option<f32>,
    /// HNSW candidate list size for this query (default: index.ef_runtime).
    #[arg(long)]
    pub ef_runtime: Option<u32>,
}

/// Options of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The memory's id.
    pub id: String,
    /// Namespace.
    #[arg(short, long)]
    pub namespace: String,
    /// Read without recording an access or refreshing the TTL.
    #[arg(long)]
    pub peek: bool,
    /// Include the embedding in --json output.
    #[arg(long)]
    pub with_embedding: bool,
}

/// Options of `forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Ids to delete.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Namespace.
    #[arg(short, long)]
    pub namespace: String,
}

/// Options of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Namespace.
    #[arg(short, long)]
    pub namespace: String,
    /// Entries per page, 1 to 10000.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Continue from this cursor (printed after a page).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Every page, not just one.
    #[arg(long)]
    pub all: bool,
}

/// Options of `stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Also count the memories of this namespace.
    #[arg(short, long)]
    pub namespace: Option<String>,
}

/// Options of `health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Time between the probes of this check (at most health.interval).
    #[arg(long, value_name = "DURATION", default_value = "200ms")]
    pub probe_interval: String,
}

/// Options of `serve-metrics`.
#[derive(Debug, Args)]
pub struct ServeMetricsArgs {
    /// Listen here instead of observability.metrics_address.
    #[arg(long)]
    pub address: Option<SocketAddr>,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// `index` actions.
#[derive(Debug, Subcommand)]
pub enum IndexAction {
    /// Create the index if missing, or check that it matches the configuration.
    Ensure,
    /// Show the index's schema, documents, indexing failures and progress (ensures it first).
    Describe,
}

/// `config` actions.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Load and validate; print every problem, or the effective configuration.
    Check {
        /// The file (default: --config, else $ENGRAM_CONFIG, else none).
        file: Option<PathBuf>,
    },
}

/// Input formats of `import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// One JSON object per line: `content` (required), `namespace`, `type`, `importance`,
    /// `tags`, `metadata`, `id`, `embedding`, `expires_in`.
    Jsonl,
    /// A directory in the benchmark dataset format: `entries.jsonl` and `entries.f32`.
    Dataset,
}

/// Options of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The JSON-lines file (`-` for stdin), or the dataset directory.
    pub path: PathBuf,
    /// Input format (default: `dataset` for a directory, else `jsonl`).
    #[arg(long, value_enum)]
    pub format: Option<ImportFormat>,
    /// Namespace of entries that name none.
    #[arg(short, long)]
    pub namespace: String,
    /// Entries per batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Import at most this many entries.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Store identical content again instead of returning the existing entry (faster: no
    /// lookup per entry).
    #[arg(long)]
    pub no_dedup: bool,
    /// Memory type of entries that name none.
    #[arg(short = 't', long = "type", value_enum, default_value = "semantic")]
    pub memory_type: TypeArg,
}

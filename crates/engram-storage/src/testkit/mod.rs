//! Test kit for storage backends (feature `testkit`): the conformance suite every backend runs.
//!
//! A backend's test file calls [`conformance_tests!`](crate::conformance_tests) with a
//! [`BackendFactory`]; the macro makes one `#[tokio::test]` per behaviour. Each behaviour gets
//! its own index and namespaces with random names and is cleaned up afterwards, so the suite
//! can run against a shared server without flushing it.

pub mod conformance;
mod faulty;

pub use faulty::{Fault, FaultyBackend};

use std::sync::Arc;

use async_trait::async_trait;

use crate::Namespace;
use crate::backend::{StorageBackend, UnboxedBackend};
use crate::layers::StackBuilder;
use crate::schema::{Algorithm, FieldKind, FieldSpec, IndexSchema, VectorSpec};

/// Makes backends for the suite and cleans up after each behaviour.
#[async_trait]
pub trait BackendFactory: Send + Sync {
    /// Whether the backend can run here. A factory that needs a server returns `false` after
    /// printing why the behaviour skips, and panics under `CI=true` (see
    /// `engram_config::test_support::require_server`). Default: `true`.
    fn available(&self, _behaviour: &str) -> bool {
        true
    }

    /// A backend ready for `ensure_index(schema)`.
    async fn create(&self, schema: &IndexSchema) -> anyhow::Result<Arc<dyn StorageBackend>>;

    /// Removes what the behaviour stored (the index and its keys). Called also on failure.
    async fn cleanup(
        &self,
        backend: Arc<dyn StorageBackend>,
        schema: &IndexSchema,
    ) -> anyhow::Result<()>;
}

/// `backend` behind the full layer stack (metrics, retry with budget, breaker, timeout) built
/// from the default configuration, as the memory store builds it: for running the suite
/// through the layers. Around a backend of known type the stack holds its reads unboxed
/// ([`UnboxedBackend`]), so this runs that path too.
///
/// # Panics
/// If the default configuration's resilience settings are invalid.
pub fn full_stack<B: UnboxedBackend + ?Sized + 'static>(
    backend: Arc<B>,
) -> Arc<dyn StorageBackend> {
    StackBuilder::from_config(
        backend,
        &engram_config::Config::default(),
        "conformance",
        Arc::new(engram_resilience::TokioClock),
        Arc::new(engram_resilience::NoopObserver),
    )
    .expect("the default configuration builds a stack")
    .build()
}

/// A short random token for unique names: process id, time and a counter, hashed.
pub fn random_token() -> String {
    crate::ids::random_token()
}

/// The schema the suite uses: 4-dimensional COSINE vectors (FLAT, so results are exact),
/// a tag, a numeric, a time and a text field, under a fresh index name and key prefix.
pub fn suite_schema() -> IndexSchema {
    let token = random_token();
    IndexSchema {
        name: format!("engram-test-{token}"),
        key_prefix: format!("engram-test-{token}:"),
        fields: vec![
            FieldSpec::new("kind", FieldKind::Tag),
            FieldSpec::new("score", FieldKind::Numeric),
            FieldSpec::new("created", FieldKind::Numeric),
            FieldSpec::new("body", FieldKind::Text),
        ],
        vector: VectorSpec {
            dimension: 4,
            metric: crate::schema::DistanceMetric::Cosine,
            vector_type: crate::schema::VectorType::Float32,
            algorithm: Algorithm::Flat,
        },
    }
}

/// A fresh namespace.
pub fn random_namespace() -> Namespace {
    Namespace::new(format!("ns-{}", random_token())).unwrap_or_else(|e| panic!("{e}"))
}

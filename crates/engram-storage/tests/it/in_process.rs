//! The conformance suite on the in-process backend.

use std::sync::Arc;

use async_trait::async_trait;
use engram_storage::testkit::BackendFactory;
use engram_storage::{InProcessBackend, IndexSchema, StorageBackend};

struct InProcess;

#[async_trait]
impl BackendFactory for InProcess {
    async fn create(&self, _schema: &IndexSchema) -> anyhow::Result<Arc<dyn StorageBackend>> {
        Ok(Arc::new(InProcessBackend::new()))
    }

    async fn cleanup(
        &self,
        _backend: Arc<dyn StorageBackend>,
        _schema: &IndexSchema,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}

engram_storage::conformance_tests!(InProcess);

/// The same suite through the full layer stack around the in-process backend, whose reads the
/// stack holds unboxed.
mod through_the_stack {
    use std::sync::Arc;

    use async_trait::async_trait;
    use engram_storage::testkit::{BackendFactory, full_stack};
    use engram_storage::{InProcessBackend, IndexSchema, StorageBackend};

    struct Layered;

    #[async_trait]
    impl BackendFactory for Layered {
        async fn create(&self, _schema: &IndexSchema) -> anyhow::Result<Arc<dyn StorageBackend>> {
            Ok(full_stack(Arc::new(InProcessBackend::new())))
        }

        async fn cleanup(
            &self,
            _backend: Arc<dyn StorageBackend>,
            _schema: &IndexSchema,
        ) -> anyhow::Result<()> {
            Ok(())
        }
    }

    engram_storage::conformance_tests!(Layered);
}

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

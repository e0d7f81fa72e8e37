//! The conformance suite on the in-process backend, bare and through the full layer stack.

use std::sync::Arc;

use async_trait::async_trait;
use engram_storage::testkit::{BackendFactory, full_stack};
use engram_storage::{InProcessBackend, IndexSchema, StorageBackend};

/// In-process backends, bare or behind the full layer stack.
struct InProcess {
    through_the_stack: bool,
}

#[async_trait]
impl BackendFactory for InProcess {
    async fn create(&self, _schema: &IndexSchema) -> anyhow::Result<Arc<dyn StorageBackend>> {
        let backend = Arc::new(InProcessBackend::new());
        Ok(if self.through_the_stack { full_stack(backend) } else { backend })
    }

    async fn cleanup(
        &self,
        _backend: Arc<dyn StorageBackend>,
        _schema: &IndexSchema,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}

engram_storage::conformance_tests!(InProcess { through_the_stack: false });

/// The same suite through the full layer stack around the in-process backend, whose reads the
/// stack holds unboxed.
mod through_the_stack {
    use super::InProcess;

    engram_storage::conformance_tests!(InProcess { through_the_stack: true });
}

//! [`SinkSpool`]: the router's upload spool on a comet, backed by the RabbitMQ upload sink.
//!
//! The router acks a device upload once [`UploadSpool::append`] returns `Ok`; here that happens
//! only when [`RabbitUploadSink::publish`] returned: the upload was confirmed by a RabbitMQ node or
//! committed to the sink's own durable spool (published later by its forwarder). The read side
//! (`GET /v1/uploads`) shows that local spool: the uploads not yet handed to RabbitMQ.
//! Duplicates are not detected here; RabbitMQ consumers drop them by the `dedup_key` header.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::store::{SpoolAppended, SpoolStats, StoreError, UploadRecord, UploadSpool};
use crate::terminal::Address;
use crate::uploads::{RabbitUploadSink, Upload, UploadSink};

/// The upload spool of a comet (see module docs).
pub struct SinkSpool {
    sink: Arc<RabbitUploadSink>,
    local: Arc<dyn UploadSpool>,
}

impl SinkSpool {
    /// Publishes through `sink`; `local` is the sink's own spool (read side).
    pub fn new(sink: Arc<RabbitUploadSink>, local: Arc<dyn UploadSpool>) -> SinkSpool {
        SinkSpool { sink, local }
    }
}

#[async_trait]
impl UploadSpool for SinkSpool {
    async fn append(
        &self,
        device: Address,
        upload_epoch: u64,
        upload_id: u32,
        topic: &str,
        payload: Bytes,
        now_ms: u64,
    ) -> Result<SpoolAppended, StoreError> {
        let up = Upload {
            device,
            upload_epoch,
            upload_id,
            topic: topic.to_string(),
            payload,
            received_at_ms: now_ms,
        };
        self.sink
            .publish(up)
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(SpoolAppended {
            cursor: 0,
            duplicate: false,
        })
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<UploadRecord>, StoreError> {
        self.local.read(after, limit).await
    }

    async fn head(&self) -> Result<u64, StoreError> {
        self.local.head().await
    }

    async fn consumer_cursor(&self, consumer: &str) -> Result<u64, StoreError> {
        self.local.consumer_cursor(consumer).await
    }

    async fn set_consumer_cursor(&self, consumer: &str, cursor: u64) -> Result<(), StoreError> {
        self.local.set_consumer_cursor(consumer, cursor).await
    }

    async fn spool_stats(&self) -> Result<SpoolStats, StoreError> {
        self.local.spool_stats().await
    }
}

//! One writer per target across consumers (docs/service.md, "Several
//! consumers"): a lease per target on RabbitMQ itself. The lease on a
//! target is an exclusive queue named after it, declared on the consumer's
//! own connection: a second connection that declares it is refused
//! (RESOURCE_LOCKED) until the holder deletes it, or the broker does when
//! the holder's connection dies, so a killed consumer never leaves a lease
//! behind. A consumer waits for a lease another holds, up to `lease-wait`;
//! past that the run ends as [`ErrorKind::Busy`] and the message goes back
//! to the queue without counting as a failed attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use archgate_core::ErrorKind;
use archgate_runner::RunError;
use archgate_runner::{Acquiring, Held, Leases};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use crate::health::Metrics;

/// AMQP's reply code for a queue that another connection holds exclusively.
const RESOURCE_LOCKED: u16 = 405;

/// Leases on the targets of a consumer's runs, held on its connection.
pub(crate) struct BrokerLeases {
    pub(crate) conn: Arc<Connection>,
    /// How long to wait for a lease another consumer holds.
    pub(crate) wait: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

/// The queue that stands for the lease on `target`: readable where it fits
/// AMQP's 255 bytes, a digest of the target where not.
pub fn lease_queue(target: &str) -> String {
    let name = format!("archgate.lease.{target}");
    if name.len() <= 255 {
        return name;
    }
    format!(
        "archgate.lease.{}",
        archgate_native::sha256_digest(target.as_bytes())
    )
}

/// A held lease: the queue is deleted when it is dropped (and by the broker
/// if this consumer's connection goes first).
struct Lease {
    channel: Option<Channel>,
    queue: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (Some(channel), queue) = (self.channel.take(), std::mem::take(&mut self.queue)) else {
            return;
        };
        // Off the dropping thread; if the runtime is gone, so is the
        // connection, and the broker deleted the queue.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
                let _ = channel.close(200, "lease released".into()).await;
                tracing::debug!(queue, "lease released");
            });
        }
    }
}

impl BrokerLeases {
    /// One try: the lease, or `None` when another consumer holds it.
    async fn try_acquire(&self, queue: &str) -> Result<Option<Lease>, lapin::Error> {
        let channel = self.conn.create_channel().await?;
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        match channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
        {
            Ok(_) => Ok(Some(Lease {
                channel: Some(channel),
                queue: queue.to_string(),
            })),
            // The broker closed the channel with the refusal.
            Err(e) if reply_code(&e) == Some(RESOURCE_LOCKED) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

impl Leases for BrokerLeases {
    fn acquire<'a>(&'a self, target: &'a str) -> Acquiring<'a> {
        Box::pin(async move {
            let queue = lease_queue(target);
            let started = Instant::now();
            let mut pause = Duration::from_millis(100);
            let mut told = false;
            loop {
                let broker = |e: lapin::Error| {
                    RunError::new(
                        ErrorKind::Transient,
                        format!("the lease on {target}: the broker: {e}"),
                    )
                };
                if let Some(lease) = self.try_acquire(&queue).await.map_err(broker)? {
                    if told {
                        tracing::info!(
                            target,
                            "lease taken after waiting {:.1} s",
                            started.elapsed().as_secs_f32()
                        );
                    }
                    return Ok(Box::new(lease) as Held);
                }
                if !told {
                    // A line that stays: what operators (and tests) watch for.
                    tracing::info!(
                        target,
                        "waiting for the lease on {target}: another consumer is publishing it"
                    );
                    self.metrics.lease_wait();
                    told = true;
                }
                if started.elapsed() >= self.wait {
                    return Err(RunError::new(
                        ErrorKind::Busy,
                        format!(
                            "{target}: another consumer has held it for over {} s; trying again later",
                            self.wait.as_secs()
                        ),
                    ));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        })
    }
}

//! One writer per target across consumers (docs/service.md, "Several
//! consumers"): a lease per target on RabbitMQ itself, that nobody polls.
//!
//! The lease on a target is a queue named after it, with a *single active
//! consumer* (`x-single-active-consumer`): every consumer that wants the
//! target consumes from it, and the broker makes exactly one of them
//! active, in the order they came. The holder is the active consumer,
//! which learns it by receiving a token message: each comer publishes one
//! token into the queue, and the broker delivers every ready token to the
//! active consumer only. The holder keeps its tokens unacknowledged; when
//! it releases the lease it acknowledges the tokens it has seen, publishes
//! a fresh one and closes its channel: the broker then makes the next
//! consumer active and hands it the fresh token (and any it had not seen).
//! A holder that dies closes its channel too, and its unacknowledged
//! tokens go to the next one. Waiting is a consumer that receives nothing
//! yet: no channel is refused and closed, so no error is logged per try.
//!
//! A run waits for all its leases within one bound (`lease-wait`), past
//! which it ends as [`ErrorKind::Busy`] and its message goes back; the
//! shutdown ends a wait the same way. Lease queues nobody uses expire
//! after an hour (`x-expires`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use archgate_core::ErrorKind;
use archgate_runner::{Acquiring, Held, Lease, Leases, RunError};
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use tokio::sync::watch;

use crate::health::Metrics;

/// How long a lease queue nobody consumes from lives on (milliseconds).
const UNUSED_LEASE_EXPIRES_MS: i32 = 3_600_000;

/// How long a comer that found nobody else on the lease waits for its own
/// token before it says it is waiting.
const QUIET_WAIT: Duration = Duration::from_secs(2);

/// Leases on the targets of a consumer's runs, held on its connection.
pub(crate) struct BrokerLeases {
    pub(crate) conn: Arc<Connection>,
    /// How long a run waits, in all, for leases other consumers hold.
    pub(crate) wait: Duration,
    pub(crate) metrics: Arc<Metrics>,
    /// The shutdown ends a wait.
    pub(crate) shutdown: watch::Receiver<bool>,
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

/// A held lease: its channel, consuming as the queue's active consumer.
struct BrokerLease {
    channel: Option<Channel>,
    consumer: Consumer,
    queue: String,
    /// The highest delivery tag of a token seen.
    seen: u64,
}

impl BrokerLease {
    /// Acknowledges the tokens seen, leaves a fresh one for the next
    /// holder, and closes the channel (tokens not seen go back with it).
    async fn give_back(&mut self) {
        let Some(channel) = self.channel.take() else {
            return;
        };
        while let Some(Some(Ok(d))) = self.consumer.next().now_or_never() {
            self.seen = self.seen.max(d.delivery_tag);
        }
        let multiple = BasicAckOptions { multiple: true };
        let acked = channel.basic_ack(self.seen, multiple).await;
        let token = publish_token(&channel, &self.queue).await;
        if let Err(e) = acked.map_err(anyhow::Error::from).and(token) {
            // The tokens not acknowledged go back with the channel: the
            // next holder still gets one.
            tracing::warn!(queue = %self.queue, "releasing the lease: {e:#}");
        }
        let _ = channel.close(200, "lease released".into()).await;
        tracing::debug!(queue = %self.queue, "lease released");
    }
}

impl Lease for BrokerLease {
    fn release(
        mut self: Box<Self>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move { self.give_back().await })
    }
}

impl Drop for BrokerLease {
    fn drop(&mut self) {
        // Dropped without a release (a run stopped): closing the channel
        // hands the tokens to the next holder. If the runtime is gone, so
        // is the connection, and the broker did it.
        let Some(channel) = self.channel.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = channel.close(200, "lease dropped".into()).await;
            });
        }
    }
}

/// Publishes a lease token into `queue`, confirmed.
pub(crate) async fn publish_token(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            b"lease",
            BasicProperties::default(),
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(_) => Ok(()),
        _ => anyhow::bail!("the broker did not take the lease token for {queue}"),
    }
}

/// Declares the lease queue `name`: a single active consumer; gone after an
/// hour unused.
pub(crate) async fn declare(channel: &Channel, name: &str) -> Result<lapin::Queue, lapin::Error> {
    let mut args = FieldTable::default();
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    args.insert(
        "x-expires".into(),
        AMQPValue::LongInt(UNUSED_LEASE_EXPIRES_MS),
    );
    channel
        .queue_declare(name.into(), QueueDeclareOptions::default(), args)
        .await
}

impl BrokerLeases {
    /// Joins the lease's line: the queue declared, consumed from, a token
    /// published. Also whether others were in the line already.
    async fn join(&self, queue: &str) -> Result<(Channel, Consumer, bool), lapin::Error> {
        let channel = self.conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let declared = declare(&channel, queue).await?;
        let others = declared.consumer_count() > 0;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer, others))
    }
}

impl Leases for BrokerLeases {
    fn acquire<'a>(&'a self, target: &'a str, since: Instant) -> Acquiring<'a> {
        Box::pin(async move {
            let queue = lease_queue(target);
            let broker = |e: String| {
                RunError::new(
                    ErrorKind::Transient,
                    format!("the lease on {target}: the broker: {e}"),
                )
            };
            let (channel, mut consumer, others) =
                self.join(&queue).await.map_err(|e| broker(e.to_string()))?;
            let close = |channel: Channel| async move {
                let _ = channel.close(200, "lease not taken".into()).await;
            };
            if let Err(e) = publish_token(&channel, &queue).await {
                close(channel).await;
                return Err(broker(format!("{e:#}")));
            }
            let deadline = tokio::time::Instant::from_std(since + self.wait);
            let mut shutdown = self.shutdown.clone();
            let mut told = None;
            if others {
                told = Some(self.say_waiting(target));
            }
            loop {
                let quiet = tokio::time::sleep(QUIET_WAIT);
                tokio::select! {
                    token = consumer.next() => {
                        let tag = match token {
                            Some(Ok(d)) => d.delivery_tag,
                            Some(Err(e)) => {
                                close(channel).await;
                                return Err(broker(e.to_string()));
                            }
                            None => {
                                close(channel).await;
                                return Err(broker("the lease's consumer was cancelled".into()));
                            }
                        };
                        if let Some(waiting) = told {
                            tracing::info!(target, "lease taken after waiting {:.1} s", waiting.elapsed().as_secs_f32());
                        }
                        return Ok(Box::new(BrokerLease {
                            channel: Some(channel),
                            consumer,
                            queue,
                            seen: tag,
                        }) as Held);
                    }
                    _ = quiet, if told.is_none() => told = Some(self.say_waiting(target)),
                    _ = tokio::time::sleep_until(deadline) => {
                        close(channel).await;
                        return Err(RunError::new(
                            ErrorKind::Busy,
                            format!(
                                "{target}: other consumers held the run's targets for over {} s; trying again later",
                                self.wait.as_secs()
                            ),
                        ));
                    }
                    _ = stopped(&mut shutdown) => {
                        close(channel).await;
                        return Err(RunError::new(
                            ErrorKind::Busy,
                            format!("{target}: the wait for its lease was ended by the shutdown"),
                        ));
                    }
                }
            }
        })
    }
}

impl BrokerLeases {
    /// The one line that says a run waits (what operators, and tests,
    /// watch for); counted.
    fn say_waiting(&self, target: &str) -> Instant {
        tracing::info!(
            target,
            "waiting for the lease on {target}: another consumer is publishing it"
        );
        self.metrics.lease_wait();
        Instant::now()
    }
}

/// Once the shutdown has come (or can no longer come).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

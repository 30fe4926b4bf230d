//! Everything archgate publishes (set-aside copies, result messages, the
//! replays of `archgate replay`), on one confirm channel, one message at a
//! time: the broker's `basic.return` for a message comes before its
//! confirmation, and with one message in flight the two can only belong
//! together, so each publish learns its own fate (a channel shared by
//! messages in flight at once would let one message's return be taken
//! for another's).
//!
//! Setting a message aside needs no right Fedora's roles do not give:
//! `QUEUE.failed` is made by the operator (or declared, where archgate
//! may), archgate binds it to the exchange under its own name (binding
//! needs write on the queue and read on the exchange, which an app has on
//! its own queues), and publishes the copy there under that key. It binds
//! right before publishing: a `mandatory` publish counts as routed when
//! any queue takes it (a catch-all consumer such as datanommer binds `#`),
//! so the binding, not the return, is what says the copy reaches
//! `QUEUE.failed`.

use anyhow::{bail, Result};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use crate::topology;
use crate::ConsumeSpec;

/// Where a published message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// A queue took it, and the broker confirmed it.
    Routed,
    /// No queue took it: the broker returned it (and confirmed that).
    Returned,
}

/// The one channel archgate publishes on.
pub(crate) struct Publisher {
    conn: std::sync::Arc<Connection>,
    channel: Channel,
    /// One message in flight at a time.
    one: tokio::sync::Mutex<()>,
}

impl Publisher {
    /// A confirm channel on `conn`.
    pub async fn open(conn: &std::sync::Arc<Connection>) -> Result<Publisher> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            conn: conn.clone(),
            channel,
            one: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether its channel is still open.
    pub fn connected(&self) -> bool {
        self.channel.status().connected()
    }

    /// Closes the channel.
    pub async fn close(&self) {
        let _ = self.channel.close(200, "archgate stopping".into()).await;
    }

    /// Publishes `mandatory` and waits for the broker's confirmation and
    /// any return of this message; `Err` when the broker refused it
    /// (`nack`) or the channel broke.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<Fate> {
        let _one = self.one.lock().await;
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                body,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(Fate::Routed),
            Confirmation::Ack(Some(_)) => Ok(Fate::Returned),
            Confirmation::Nack(_) => bail!("the broker refused a message to {routing_key}"),
            Confirmation::NotRequested => bail!("internal error: no publisher confirms"),
        }
    }

    /// Binds `queue` to `exchange` with `key`, on a channel of its own (a
    /// refusal closes the channel it comes on).
    pub async fn bind(&self, queue: &str, exchange: &str, key: &str) -> Result<()> {
        let channel = self.conn.create_channel().await?;
        let bound = channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, "bound".into()).await;
        bound.map_err(|e| {
            topology::step(
                &format!("bind the queue {queue} to {exchange} with {key}"),
                &format!("write on `{queue}` and read on `{exchange}`"),
                e,
            )
        })
    }

    /// A copy of a message into `QUEUE.failed`: the queue declared where
    /// archgate may (not with passive declares), bound, the copy published
    /// under its key, routed and confirmed. `Err` when any step fails: the
    /// message is then kept and set aside later, never dropped.
    pub async fn set_aside(
        &self,
        spec: &ConsumeSpec,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<()> {
        let queue = spec.failed_queue();
        if !spec.passive_declares {
            let channel = self.conn.create_channel().await?;
            let declared = topology::declare_failed(&channel, spec).await;
            let _ = channel.close(200, "declared".into()).await;
            declared?;
        }
        self.bind(&queue, &spec.exchange, &spec.failed_key())
            .await?;
        match self
            .publish(&spec.exchange, &spec.failed_key(), body, properties)
            .await?
        {
            Fate::Routed => Ok(()),
            Fate::Returned => bail!(
                "the copy for {queue} was returned: no queue is bound to {} with {}",
                spec.exchange,
                spec.failed_key()
            ),
        }
    }
}

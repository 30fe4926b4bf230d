//! Announcing what a run published: `ContainerPublishedV1` messages, in
//! fedora-messaging's wire format, on the configured exchange.
//!
//! Every publish is announced at least once. A try announces the targets
//! it published, also when another target of it failed (before the
//! message is tried again or set aside). A message that was tried before
//! (a retry, or a redelivery after a consumer died between a write and its
//! announcement) also announces the targets that are `unchanged` because
//! their index already names this compose: an earlier try wrote them.
//! Duplicates happen only after a failure.

use anyhow::Result;
use archgate_core::{Decision, Report};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;

use crate::messages::{self, Published};
use crate::publisher::{Fate, Publisher};
use crate::Service;

/// The report with only the targets to announce: published, and after an
/// earlier try, unchanged ones whose index names this compose.
pub(crate) fn to_announce(report: &Report, tried_before: bool) -> Report {
    let mut report = report.clone();
    let compose = report.compose.id.clone();
    report.targets.retain(|t| match t.decision {
        Decision::Published => true,
        Decision::Unchanged => tried_before && t.current_compose.as_deref() == Some(&compose),
        _ => false,
    });
    for t in &mut report.targets {
        t.decision = Decision::Published;
    }
    report
}

/// Sends the result messages for `report` (see [`to_announce`]). `Err`
/// when one could not be sent (a broken channel): the message is then
/// handed back, and announced by its next try.
pub(crate) async fn announce(
    service: &Service,
    publisher: &Publisher,
    report: &Report,
    tried_before: bool,
) -> Result<()> {
    let Some(prefix) = &service.spec.publish_topic_prefix else {
        return Ok(());
    };
    let report = to_announce(report, tried_before);
    if report.targets.is_empty() {
        return Ok(());
    }
    let compose = archgate_core::untrusted(&report.compose.id);
    let release = report
        .compose
        .version
        .as_deref()
        .and_then(|v| v.parse().ok());
    let Some(release) = release else {
        tracing::warn!(%compose, "the release is not a number: no result messages");
        return Ok(());
    };
    for body in messages::published(&report, release) {
        send(service, publisher, prefix, &body).await?;
    }
    Ok(())
}

/// One `ContainerPublishedV1`, `mandatory` and confirmed; one that no queue
/// takes is logged, not an error.
async fn send(
    service: &Service,
    publisher: &Publisher,
    prefix: &str,
    body: &Published,
) -> Result<()> {
    let topic = topic(prefix);
    let json = serde_json::to_vec(body)?;
    let mut headers = FieldTable::default();
    headers.insert(
        "fedora_messaging_schema".into(),
        AMQPValue::LongString(LongString::from(messages::RESULT_SCHEMA)),
    );
    headers.insert(
        "fedora_messaging_severity".into(),
        AMQPValue::LongLongInt(messages::SEVERITY_INFO),
    );
    headers.insert(
        "fedora_messaging_schema_package".into(),
        AMQPValue::LongString(LongString::from(messages::RESULT_SCHEMA_PACKAGE)),
    );
    headers.insert(
        "sent-at".into(),
        AMQPValue::LongString(LongString::from(crate::clock::rfc3339(crate::clock::now()))),
    );
    // fedora-messaging mirrors the priority (0 unless configured) here.
    headers.insert("priority".into(), AMQPValue::LongLongInt(0));
    // What consumers filter on: one header per container.
    for container in body.containers() {
        let name = format!("fedora_messaging_container_{container}");
        if name.len() <= 255 {
            headers.insert(name.as_str().into(), AMQPValue::Boolean(true));
        }
    }
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_message_id(uuid4().as_str().into())
        .with_headers(headers);
    let exchange = &service.spec.exchange;
    match publisher.publish(exchange, &topic, &json, props).await? {
        Fate::Routed => {
            service.metrics.result_sent();
            tracing::info!(topic, repository = %body.repository, registries = ?body.registries, tags = ?body.tags, "result message sent")
        }
        Fate::Returned => {
            tracing::warn!(topic, repository = %body.repository, "result message sent, but no queue is bound to its topic on {exchange}")
        }
    }
    Ok(())
}

/// `PREFIX.fedora_image_uploader.published.v1.container`; a prefix that
/// ends in a dot does not double it.
fn topic(prefix: &str) -> String {
    format!(
        "{}.{}",
        prefix.trim_end_matches('.'),
        messages::RESULT_SCHEMA
    )
}

/// A random (version 4) UUID, from the system's randomness.
fn uuid4() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        // No /dev/urandom: the time and pid, still unique enough for an id.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailing_dot_is_not_doubled() {
        let want = "org.fedoraproject.prod.fedora_image_uploader.published.v1.container";
        assert_eq!(topic("org.fedoraproject.prod"), want);
        assert_eq!(topic("org.fedoraproject.prod."), want);
    }

    #[test]
    fn ids_and_times_have_their_shapes() {
        let id = uuid4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(uuid4(), id);
        let t = crate::clock::rfc3339(crate::clock::now());
        assert!(archgate_core::parse_rfc3339(&t).is_some(), "{t}");
    }
}

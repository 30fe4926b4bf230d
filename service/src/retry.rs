//! What a failed try is worth, by who can mend its cause, and when the next
//! one comes (docs/service.md, "Retries"):
//!
//! | the error's kind | who mends it | what happens |
//! |---|---|---|
//! | `auth` (our credentials refused), `config` | our operator | set aside at once |
//! | `external` (a registry's certificate, its quota, our disk filling up) | another party, or time | tried again with backoff until `retry-horizon` has passed since the first try |
//! | `transient`, `internal`, `invalid-input`, `moved-tag`, a run that died | time, mostly | tried again with backoff, `max-attempts` runs in all |
//!
//! The wait before the second try is `retry-delay`; it doubles with each
//! try, up to `max-retry-delay`.
//!
//! Also the copy of a message that is set aside: the original's
//! properties, less what the broker keeps for itself and less its
//! `expiration` (a set-aside message never expires), with the reason.

use std::time::Duration;

use archgate_core::ErrorKind;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

use crate::attempts::Record;
use crate::ConsumeSpec;

/// The header that says how many runs a set-aside message had.
pub const ATTEMPTS_HEADER: &str = "x-archgate-attempts";
/// The header that says why a message was set aside.
pub const ERROR_HEADER: &str = "x-archgate-error";
/// The routing key the message first came with.
pub const ROUTING_KEY_HEADER: &str = "x-archgate-routing-key";

/// The longest reason a set-aside copy carries (AMQP frames are bounded;
/// the whole reason is in the log).
const MAX_REASON: usize = 2_000;

/// What comes after a failed try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Another try, this long after the failed one started.
    Retry(Duration),
    /// Set aside, for this reason.
    SetAside(String),
}

/// When the next try of a message with this record is due (Unix seconds):
/// its last try's start and the backoff of its tries.
pub(crate) fn due(spec: &ConsumeSpec, record: &Record) -> i64 {
    record.last_start + backoff(spec, record.tries).as_secs() as i64
}

/// The wait after the `tries`-th try: `retry-delay`, doubled at each try,
/// at most `max-retry-delay`.
pub(crate) fn backoff(spec: &ConsumeSpec, tries: u32) -> Duration {
    let doublings = tries.saturating_sub(1).min(30);
    spec.retry_delay
        .saturating_mul(1u32 << doublings)
        .min(spec.max_retry_delay.max(spec.retry_delay))
}

/// What follows a try that ended in `kind` (`record` counts it already).
pub(crate) fn after(
    spec: &ConsumeSpec,
    record: &Record,
    kind: ErrorKind,
    error: &str,
    now: i64,
) -> Next {
    let tries = record.tries;
    match kind {
        ErrorKind::Auth | ErrorKind::Config => Next::SetAside(format!(
            "{} error, which only this deployment's operator can mend: {error}",
            kind.as_str()
        )),
        ErrorKind::External => {
            let horizon = spec.retry_horizon.as_secs() as i64;
            if now - record.first >= horizon {
                Next::SetAside(format!(
                    "still failing after {tries} tries over {}: {error}",
                    text(spec.retry_horizon)
                ))
            } else {
                Next::Retry(backoff(spec, tries))
            }
        }
        _ if tries >= spec.max_attempts => {
            Next::SetAside(format!("failed {tries} times; last error: {error}"))
        }
        _ => Next::Retry(backoff(spec, tries)),
    }
}

/// Before a try: the message's record says its earlier runs died (the
/// process with them, or the broker took the message back) this often:
/// set aside once that reaches `max-attempts`.
pub(crate) fn before(spec: &ConsumeSpec, record: &Record) -> Option<String> {
    if record.tries < spec.max_attempts || record.died() == 0 {
        return None;
    }
    let last = match &record.last_error {
        Some(e) => format!("; the last error: {e}"),
        None => String::new(),
    };
    Some(format!(
        "started {} times, {} of them never ended (the run killed the consumer, or outlived the broker's consumer_timeout){last}",
        record.tries,
        record.died()
    ))
}

pub(crate) fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a AMQPValue> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
}

/// The copy of a message set aside: its properties with the reason (cut
/// to a bounded length), the runs it had and the routing key it came with;
/// persistent, never expiring; the broker's own history dropped.
pub(crate) fn aside_properties(delivery: &Delivery, why: &str, tries: u32) -> BasicProperties {
    let mut extra = vec![
        (
            ERROR_HEADER,
            AMQPValue::LongString(LongString::from(cut(why, MAX_REASON))),
        ),
        (ATTEMPTS_HEADER, AMQPValue::LongLongInt(i64::from(tries))),
    ];
    if header(delivery, ROUTING_KEY_HEADER).is_none() {
        let key = LongString::from(delivery.routing_key.as_str());
        extra.push((ROUTING_KEY_HEADER, AMQPValue::LongString(key)));
    }
    copy_properties(delivery, &[], extra)
}

/// The copy `archgate replay` sends back to the queue: the set-aside
/// message without its reason and count (its tries start anew).
pub(crate) fn replay_properties(delivery: &Delivery) -> BasicProperties {
    copy_properties(delivery, &[ERROR_HEADER, ATTEMPTS_HEADER], vec![])
}

/// A message's properties for a copy of it: its headers less `drop` and
/// what the broker keeps for itself, plus `extra`; persistent; neither its
/// expiration (a copy stays) nor its user id (the broker checks that one
/// against whoever publishes).
fn copy_properties(
    delivery: &Delivery,
    drop: &[&str],
    extra: Vec<(&str, AMQPValue)>,
) -> BasicProperties {
    let broker_kept = [
        "x-death",
        "x-first-death",
        "x-last-death",
        "x-delivery-count",
    ];
    let mut headers = FieldTable::default();
    if let Some(h) = delivery.properties.headers() {
        for (k, v) in h.inner() {
            let k_str = k.as_str();
            let dropped = broker_kept.iter().any(|p| k_str.starts_with(p)) || drop.contains(&k_str);
            if !dropped {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    for (k, v) in extra {
        headers.insert(ShortString::from(k), v);
    }
    let p = &delivery.properties;
    let mut out = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(2);
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    out
}

/// `s` cut to at most `max` bytes, on a character boundary, marked.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(4);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} ...", &s[..end])
}

/// A duration for messages: `30 s`, `2.0 h`.
pub(crate) fn text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 120.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ConsumeSpec {
        crate::tests::spec()
    }

    #[test]
    fn the_wait_doubles_up_to_its_bound() {
        let mut s = spec();
        s.retry_delay = Duration::from_secs(30);
        s.max_retry_delay = Duration::from_secs(300);
        let waits: Vec<u64> = (1..=6).map(|t| backoff(&s, t).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 300, 300]);
        assert_eq!(backoff(&s, 200).as_secs(), 300);
    }

    #[test]
    fn kinds_decide_by_who_mends_them() {
        let mut s = spec();
        s.max_attempts = 3;
        s.retry_horizon = Duration::from_secs(3600);
        let r = |tries, first| Record {
            tries,
            ended: tries,
            first,
            ..Record::default()
        };
        let now = 10_000;
        for kind in [ErrorKind::Auth, ErrorKind::Config] {
            assert!(matches!(
                after(&s, &r(1, now), kind, "e", now),
                Next::SetAside(_)
            ));
        }
        assert!(matches!(
            after(&s, &r(2, now), ErrorKind::Transient, "e", now),
            Next::Retry(_)
        ));
        assert!(matches!(
            after(&s, &r(3, now), ErrorKind::Transient, "e", now),
            Next::SetAside(_)
        ));
        // What another party mends: tried past max-attempts, until the horizon.
        assert!(matches!(
            after(&s, &r(9, now - 3000), ErrorKind::External, "e", now),
            Next::Retry(_)
        ));
        assert!(matches!(
            after(&s, &r(9, now - 3600), ErrorKind::External, "e", now),
            Next::SetAside(_)
        ));
    }

    #[test]
    fn runs_that_died_are_capped_too() {
        let mut s = spec();
        s.max_attempts = 2;
        let mut r = Record {
            tries: 1,
            ..Record::default()
        };
        assert_eq!(before(&s, &r), None);
        r.tries = 2;
        assert!(before(&s, &r).unwrap().contains("never ended"));
        // Runs that ended in errors are the after-try rule's to count.
        r.ended = 2;
        assert_eq!(before(&s, &r), None);
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        let long = "é".repeat(3000);
        let c = cut(&long, MAX_REASON);
        assert!(c.len() <= MAX_REASON && c.ends_with(" ..."));
        assert_eq!(cut("short", 10), "short");
    }
}

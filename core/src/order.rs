//! Compose order (docs/gate.md, "Compose order"): a tag never goes back to
//! an older compose. Every index archgate writes names the compose it came
//! from ([`ComposeStamp::annotations`]); the gate reads that name back from
//! the current index and refuses a compose older than it.
//!
//! A source gives the order: Pungi's compose date, type and respin (as
//! productmd orders composes), Koji's task id, the `dir` source's
//! `compose.toml` (date and respin), a plugin's date and respin.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use crate::model::Compose;

/// The index annotation that names the compose (its id).
pub const COMPOSE_ANNOTATION: &str = "dev.archgate.compose";
/// The index annotation that gives the compose's place in the order.
pub const ORDER_ANNOTATION: &str = "dev.archgate.compose.order";
/// The index annotation with the compose's date (RFC 3339).
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";

/// productmd's compose types, least first (its `COMPOSE_TYPES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComposeType {
    /// `test` (`.t`).
    Test,
    /// `ci`.
    Ci,
    /// `nightly` (`.n`).
    Nightly,
    /// `production` (no suffix).
    Production,
    /// `development` (`.d`).
    Development,
}

impl ComposeType {
    /// The name productmd uses (`nightly`, `production`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ComposeType::Test => "test",
            ComposeType::Ci => "ci",
            ComposeType::Nightly => "nightly",
            ComposeType::Production => "production",
            ComposeType::Development => "development",
        }
    }

    /// A type by its name or its id suffix (`n`, `t`, `ci`, `d`).
    pub fn parse(s: &str) -> Option<ComposeType> {
        Some(match s {
            "test" | "t" => ComposeType::Test,
            "ci" => ComposeType::Ci,
            "nightly" | "n" => ComposeType::Nightly,
            "production" => ComposeType::Production,
            "development" | "d" => ComposeType::Development,
            _ => return None,
        })
    }
}

/// Where a compose stands among the composes of its kind: later is newer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeOrder {
    /// productmd's order: the date (`YYYYMMDD`), then the type, then the
    /// respin. A part that is not known is not compared.
    Dated {
        /// `YYYYMMDD`.
        date: String,
        /// The compose type, when known.
        kind: Option<ComposeType>,
        /// The respin, when known.
        respin: Option<u32>,
    },
    /// A Koji task: its id.
    Task(u64),
    /// A CI pipeline's build id: numbers compared as numbers, the rest as
    /// text, part by part (`20261207.10` after `20261207.9`).
    Build(String),
}

impl ComposeOrder {
    /// How `self` compares with `other`; `None` when it cannot be told
    /// (orders of different kinds, or the same date with nothing more known).
    pub fn compare(&self, other: &ComposeOrder) -> Option<Ordering> {
        use ComposeOrder::*;
        match (self, other) {
            (Task(a), Task(b)) => Some(a.cmp(b)),
            (Build(a), Build(b)) => Some(compare_builds(a, b)),
            (
                Dated {
                    date: d1,
                    kind: k1,
                    respin: r1,
                },
                Dated {
                    date: d2,
                    kind: k2,
                    respin: r2,
                },
            ) => {
                let by_date = d1.cmp(d2);
                if by_date != Ordering::Equal {
                    return Some(by_date);
                }
                if let (Some(k1), Some(k2)) = (k1, k2) {
                    if k1 != k2 {
                        return Some(k1.cmp(k2));
                    }
                }
                match (r1, r2) {
                    (Some(r1), Some(r2)) => Some(r1.cmp(r2)),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The order a compose id gives, where it has a known shape: productmd's
    /// `NAME-VERSION-YYYYMMDD[.TYPE][.RESPIN]`, or `koji-task-ID`.
    pub fn from_id(id: &str) -> Option<ComposeOrder> {
        if let Some(task) = id.strip_prefix("koji-task-") {
            return task.parse().ok().map(ComposeOrder::Task);
        }
        if let Some(build) = id.strip_prefix("build-") {
            return Some(ComposeOrder::Build(build.to_string()));
        }
        let last = id.rsplit('-').next()?;
        let mut parts = last.split('.');
        let date = parts.next()?;
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut kind = Some(ComposeType::Production);
        let mut respin = None;
        for part in parts {
            match part.parse::<u32>() {
                Ok(n) => respin = Some(n),
                Err(_) => kind = ComposeType::parse(part),
            }
        }
        Some(ComposeOrder::Dated {
            date: date.to_string(),
            kind,
            respin,
        })
    }

    /// Reads the text [`fmt::Display`] writes.
    pub fn parse(text: &str) -> Option<ComposeOrder> {
        let mut fields = BTreeMap::new();
        for pair in text.split_whitespace() {
            let (k, v) = pair.split_once('=')?;
            fields.insert(k, v);
        }
        if let Some(task) = fields.get("koji-task") {
            return task.parse().ok().map(ComposeOrder::Task);
        }
        if let Some(build) = fields.get("build") {
            return Some(ComposeOrder::Build(build.to_string()));
        }
        let date = fields.get("date")?;
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(ComposeOrder::Dated {
            date: date.to_string(),
            kind: fields.get("type").and_then(|t| ComposeType::parse(t)),
            respin: fields.get("respin").and_then(|r| r.parse().ok()),
        })
    }
}

/// `date=20241101 type=nightly respin=0`, or `koji-task=12345`.
impl fmt::Display for ComposeOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComposeOrder::Task(id) => write!(f, "koji-task={id}"),
            ComposeOrder::Build(id) => write!(f, "build={id}"),
            ComposeOrder::Dated { date, kind, respin } => {
                write!(f, "date={date}")?;
                if let Some(k) = kind {
                    write!(f, " type={}", k.as_str())?;
                }
                if let Some(r) = respin {
                    write!(f, " respin={r}")?;
                }
                Ok(())
            }
        }
    }
}

/// What an index says of the compose it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeStamp {
    /// The compose id.
    pub id: String,
    /// Its place in the order, when known.
    pub order: Option<ComposeOrder>,
    /// RFC 3339.
    pub created: Option<String>,
}

impl ComposeStamp {
    /// The stamp of a compose.
    pub fn of(compose: &Compose) -> ComposeStamp {
        ComposeStamp {
            id: compose.id.clone(),
            order: compose.order(),
            created: compose.created(),
        }
    }

    /// The annotations an index written from this compose carries.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert(COMPOSE_ANNOTATION.to_string(), self.id.clone());
        if let Some(order) = &self.order {
            out.insert(ORDER_ANNOTATION.to_string(), order.to_string());
        }
        if let Some(created) = &self.created {
            out.insert(CREATED_ANNOTATION.to_string(), created.clone());
        }
        out
    }

    /// The stamp an index's annotations carry; `None` without
    /// [`COMPOSE_ANNOTATION`] (an index another tool made is not ordered).
    /// The order comes from [`ORDER_ANNOTATION`], else from the id's shape,
    /// else from the date in [`CREATED_ANNOTATION`].
    pub fn read(annotations: &BTreeMap<String, String>) -> Option<ComposeStamp> {
        let id = annotations.get(COMPOSE_ANNOTATION)?.clone();
        let created = annotations.get(CREATED_ANNOTATION).cloned();
        let order = annotations
            .get(ORDER_ANNOTATION)
            .and_then(|o| ComposeOrder::parse(o))
            .or_else(|| ComposeOrder::from_id(&id))
            .or_else(|| {
                let date: String = created.as_deref()?.get(..10)?.replace('-', "");
                (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit())).then_some(
                    ComposeOrder::Dated {
                        date,
                        kind: None,
                        respin: None,
                    },
                )
            });
        Some(ComposeStamp { id, order, created })
    }

    /// Whether this stamp (what a target holds) names a compose newer than
    /// `this` one. The same compose is never newer; composes whose order
    /// cannot be compared are not ordered.
    pub fn is_newer_than(&self, this: &ComposeStamp) -> bool {
        if self.id == this.id {
            return false;
        }
        match (&self.order, &this.order) {
            (Some(held), Some(mine)) => held.compare(mine) == Some(Ordering::Greater),
            _ => false,
        }
    }

    /// Whether an annotation key is one archgate writes to name a compose
    /// (and which the gate therefore does not count as a difference between
    /// two indexes).
    pub fn is_stamp_key(key: &str) -> bool {
        matches!(
            key,
            COMPOSE_ANNOTATION | ORDER_ANNOTATION | CREATED_ANNOTATION
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str) -> ComposeOrder {
        ComposeOrder::from_id(id).unwrap()
    }

    #[test]
    fn productmd_order_date_type_respin() {
        let cmp = |a: &str, b: &str| order(a).compare(&order(b));
        assert_eq!(
            cmp("Fedora-41-20241102.n.0", "Fedora-41-20241101.n.5"),
            Some(Ordering::Greater)
        );
        assert_eq!(
            cmp("Fedora-41-20241101.n.1", "Fedora-41-20241101.n.0"),
            Some(Ordering::Greater)
        );
        // productmd: test < ci < nightly < production < development.
        assert_eq!(
            cmp("Fedora-41-20241101.0", "Fedora-41-20241101.n.3"),
            Some(Ordering::Greater)
        );
        assert_eq!(
            cmp("Fedora-Rawhide-20241105.n.0", "Fedora-Rawhide-20241105.n.0"),
            Some(Ordering::Equal)
        );
        assert_eq!(ComposeOrder::from_id("demo"), None);
        assert_eq!(
            order("koji-task-140000").compare(&order("koji-task-130000")),
            Some(Ordering::Greater)
        );
        assert_eq!(
            order("koji-task-1").compare(&order("F-41-20241101.0")),
            None
        );
    }

    #[test]
    fn orders_and_stamps_read_back() {
        for id in [
            "Fedora-41-20241101.n.0",
            "Fedora-41-20241020.0",
            "koji-task-7",
        ] {
            let o = order(id);
            assert_eq!(ComposeOrder::parse(&o.to_string()), Some(o));
        }
        let stamp = ComposeStamp {
            id: "Demo-41-c2".into(),
            order: Some(ComposeOrder::Dated {
                date: "20241102".into(),
                kind: None,
                respin: Some(1),
            }),
            created: Some("2024-11-02T00:00:00Z".into()),
        };
        assert_eq!(
            ComposeStamp::read(&stamp.annotations()),
            Some(stamp.clone())
        );
        // Another tool's index: no stamp, not ordered.
        assert_eq!(ComposeStamp::read(&BTreeMap::new()), None);
        // Only the id and the date: ordered by the date.
        let mut only = BTreeMap::new();
        only.insert(COMPOSE_ANNOTATION.to_string(), "Other-c3".to_string());
        only.insert(
            CREATED_ANNOTATION.to_string(),
            "2024-11-03T10:00:00Z".to_string(),
        );
        let read = ComposeStamp::read(&only).unwrap();
        assert!(read.is_newer_than(&stamp));
        assert!(!stamp.is_newer_than(&read));
        assert!(
            !stamp.is_newer_than(&stamp),
            "the same compose is not older"
        );
    }
}

/// Two build ids, part by part: runs of digits as numbers, anything else
/// as text.
fn compare_builds(a: &str, b: &str) -> Ordering {
    fn parts(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for ((da, xa), (db, xb)) in pa.iter().zip(&pb) {
        let by = if *da && *db {
            let (ta, tb) = (xa.trim_start_matches('0'), xb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then(ta.cmp(tb))
        } else {
            xa.cmp(xb)
        };
        if by != Ordering::Equal {
            return by;
        }
    }
    pa.len().cmp(&pb.len())
}

#[cfg(test)]
mod build_tests {
    use super::*;

    #[test]
    fn build_ids_compare_numbers_as_numbers() {
        let b = |s: &str| ComposeOrder::Build(s.into());
        assert_eq!(
            b("20261207.10").compare(&b("20261207.9")),
            Some(Ordering::Greater)
        );
        assert_eq!(b("99").compare(&b("100")), Some(Ordering::Less));
        assert_eq!(b("7").compare(&b("7")), Some(Ordering::Equal));
        assert_eq!(b("1.2-rc1").compare(&b("1.2")), Some(Ordering::Greater));
        assert_eq!(b("5").compare(&ComposeOrder::Task(5)), None);
        assert_eq!(ComposeOrder::parse("build=42"), Some(b("42")));
        assert_eq!(b("42").to_string(), "build=42");
    }
}

//! Values that several tables hold: durations, addresses, ages, templates.

use archgate_core::{Age, Template};
use serde::de::{self, Deserializer};
use serde::Deserialize;

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let s = String::deserialize(d)?;
    let age: Age = s.parse().map_err(de::Error::custom)?;
    Ok(std::time::Duration::from_secs(age.seconds.max(0) as u64))
}

pub(crate) fn socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "`{s}` is not an address and port, e.g. \"127.0.0.1:9464\""
        ))
    })
}

pub(crate) fn some_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    duration(d).map(Some)
}

/// A size in bytes: a number, or a string with a unit (`"2GiB"`, `"500 MB"`;
/// KiB, MiB, GiB, TiB are powers of 1024, kB, MB, GB, TB of 1000).
pub(crate) fn some_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(Some(n)),
        Size::Text(s) => parse_size(&s).map(Some).map_err(de::Error::custom),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. \"2GiB\", \"500MB\", 1048576)"))?;
    let times: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit (KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
            ))
        }
    };
    number
        .checked_mul(times)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub(crate) fn yes() -> bool {
    true
}

pub(crate) fn age<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Age>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(de::Error::custom)
}

pub(crate) fn template<'de, D: Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
    Template::parse(&String::deserialize(d)?).map_err(de::Error::custom)
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("500 MB"), Ok(500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("2 GiBs").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}

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

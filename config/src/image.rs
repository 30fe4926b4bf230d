//! `[[image]]`: what is published, where, under which tags.

use std::collections::BTreeMap;
use std::fmt;

use archgate_core::{Arch, Policy, Repository, TagRule, Template, When};
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::values::template;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ImageConfig {
    pub name: toml::Spanned<String>,
    #[serde(default, rename = "match")]
    pub matcher: BTreeMap<String, String>,
    #[serde(deserialize_with = "repositories")]
    pub repositories: Vec<Repository>,
    #[serde(deserialize_with = "tags")]
    pub tags: Vec<TagRule>,
    #[serde(default = "default_arch_tag", deserialize_with = "template")]
    pub arch_tag: Template,
    /// Written on each index published (values are templates).
    #[serde(default, deserialize_with = "annotations")]
    pub annotations: BTreeMap<String, Template>,
    pub arches: Option<Vec<Arch>>,
    pub policy: Option<Policy>,
    /// `false`: what is published for this image is not signed.
    pub sign: Option<bool>,
}

fn default_arch_tag() -> Template {
    Template::parse("{tag}-{arch}").expect("the default arch tag is valid")
}

/// `tags`: each a template, or `{ tag = TEMPLATE, when = CONDITION }`.
fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TagRule>, D::Error> {
    let raw = Vec::<TagEntry>::deserialize(d)?;
    if raw.is_empty() {
        return Err(de::Error::custom(
            "`tags` is empty; name at least one tag, e.g. [\"{release}\", \"latest\"]",
        ));
    }
    Ok(raw.into_iter().map(|t| t.0).collect())
}

struct TagEntry(TagRule);

impl<'de> Deserialize<'de> for TagEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = TagEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tag template, or a table { tag = TEMPLATE, when = CONDITION }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TagEntry, E> {
                let template = Template::parse(v).map_err(E::custom)?;
                Ok(TagEntry(TagRule {
                    template,
                    when: None,
                }))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<TagEntry, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Table {
                    #[serde(deserialize_with = "template")]
                    tag: Template,
                    #[serde(default, deserialize_with = "when")]
                    when: Option<When>,
                }
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TagEntry(TagRule {
                    template: t.tag,
                    when: t.when,
                }))
            }
        }
        d.deserialize_any(Visit)
    }
}

fn when<'de, D: Deserializer<'de>>(d: D) -> Result<Option<When>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(de::Error::custom)
}

fn annotations<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Template>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            if k.is_empty() {
                return Err(de::Error::custom("an annotation key may not be empty"));
            }
            if archgate_core::ComposeStamp::is_stamp_key(&k) {
                return Err(de::Error::custom(format!(
                    "annotation `{k}` is written by archgate on every index (it names the compose the index came from); leave it out"
                )));
            }
            let t = Template::parse_text(&v).map_err(de::Error::custom)?;
            if t.uses("arch") {
                return Err(de::Error::custom(format!(
                    "annotation `{k}`: an index annotation cannot use {{arch}}"
                )));
            }
            Ok((k, t))
        })
        .collect()
}

fn repositories<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Repository>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    if raw.is_empty() {
        return Err(de::Error::custom(
            "`repositories` is empty; name at least one, e.g. \"oci:out/fedora\"",
        ));
    }
    raw.iter()
        .map(|s| Repository::parse(s).map_err(de::Error::custom))
        .collect()
}

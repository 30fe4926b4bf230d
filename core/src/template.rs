//! Templates for tags and annotations: `{release}`, `{version}`,
//! `{compose_id}`, `{date}`, `{respin}`, `{tag}`, `{arch}`; and the release
//! conditions (`when`) under which a tag is published.

use std::fmt;

use crate::arch::Arch;
use crate::model::Compose;

const NAMES: [&str; 7] = [
    "release",
    "version",
    "compose_id",
    "date",
    "respin",
    "tag",
    "arch",
];

/// A template checked when the configuration is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(String);

/// A template that cannot be read or rendered: why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

/// What a template may refer to.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The compose (`{release}`, `{version}`, `{compose_id}`, `{date}`, `{respin}`).
    pub compose: &'a Compose,
    /// `[release]`: what the release words mean.
    pub releases: &'a Releases,
    /// `{tag}`, where a tag is being rendered around.
    pub tag: Option<&'a str>,
    /// `{arch}`, where an arch tag is rendered.
    pub arch: Option<Arch>,
}

/// `[release]`: the newest stable release, and the number Rawhide stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Releases {
    /// The release that gets the `latest` rule.
    pub latest: Option<String>,
    /// What `{version}` gives for a Rawhide compose.
    pub rawhide: Option<String>,
}

/// When a tag is published, by what kind of release the compose is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The compose is Rawhide.
    Rawhide,
    /// Its release is `[release] latest`.
    Latest,
    /// Numbered and newer than `[release] latest`.
    Branched,
    /// Numbered and not newer than `[release] latest`.
    Stable,
}

impl When {
    /// Every condition.
    pub const ALL: [When; 4] = [When::Rawhide, When::Latest, When::Branched, When::Stable];

    /// The word the configuration uses.
    pub fn as_str(self) -> &'static str {
        match self {
            When::Rawhide => "rawhide",
            When::Latest => "latest",
            When::Branched => "branched",
            When::Stable => "stable",
        }
    }

    /// Whether the condition needs `[release] latest` to be decided.
    pub fn needs_latest(self) -> bool {
        !matches!(self, When::Rawhide)
    }

    /// Whether a compose of `release` (lower case: `41`, `rawhide`) meets it.
    pub fn holds(self, release: Option<&str>, releases: &Releases) -> Result<bool, TemplateError> {
        let number = |r: &str| r.parse::<u64>().ok();
        let latest = || {
            releases.latest.as_deref().ok_or_else(|| {
                TemplateError(format!(
                    "`when = \"{}\"` needs `[release] latest`",
                    self.as_str()
                ))
            })
        };
        Ok(match self {
            When::Rawhide => release == Some("rawhide"),
            When::Latest => release == Some(latest()?),
            When::Branched | When::Stable => {
                let latest = latest()?;
                let latest_n = number(latest).ok_or_else(|| {
                    TemplateError(format!(
                        "`[release] latest = \"{latest}\"` is not a release number"
                    ))
                })?;
                match release.and_then(number) {
                    None => false,
                    Some(n) if self == When::Branched => n > latest_n,
                    Some(n) => n <= latest_n,
                }
            }
        })
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for When {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        When::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| {
                TemplateError(format!(
                    "unknown condition `{s}`; expected one of rawhide, latest, branched, stable"
                ))
            })
    }
}

/// A tag as configured: a template, published when its condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRule {
    /// The tag's template.
    pub template: Template,
    /// When it is published (always, without a condition).
    pub when: Option<When>,
}

impl TagRule {
    /// The tag for this compose, or `None` when its condition does not hold.
    pub fn render(&self, vars: &Vars<'_>) -> Result<Option<String>, TemplateError> {
        if let Some(when) = self.when {
            if !when.holds(vars.compose.release.as_deref(), vars.releases)? {
                return Ok(None);
            }
        }
        self.template.render(vars).map(Some)
    }
}

impl Template {
    /// Reads a tag template (what a tag may hold: `{...}` placeholders and tag characters).
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        if s.is_empty() {
            return Err(TemplateError("a tag template may not be empty".into()));
        }
        Template::parse_text(s)
    }

    /// A template for free text (an annotation value): may be empty.
    pub fn parse_text(s: &str) -> Result<Template, TemplateError> {
        for piece in pieces(s) {
            if let Piece::Var(name) = piece? {
                if !NAMES.contains(&name) {
                    return Err(TemplateError(format!(
                        "unknown placeholder `{{{name}}}` in `{s}`; known: {{{}}}",
                        NAMES.join("}, {")
                    )));
                }
            }
        }
        Ok(Template(s.to_string()))
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text with every placeholder filled in, checked to be a valid tag.
    pub fn render(&self, vars: &Vars<'_>) -> Result<String, TemplateError> {
        let out = self.render_text(vars)?;
        if !is_valid_tag(&out) {
            return Err(TemplateError(format!(
                "`{}` gives `{out}`, which is not a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})",
                self.0
            )));
        }
        Ok(out)
    }

    /// The text with every placeholder filled in (an annotation value).
    pub fn render_text(&self, vars: &Vars<'_>) -> Result<String, TemplateError> {
        let mut out = String::new();
        for piece in pieces(&self.0) {
            match piece? {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(name) => {
                    let value = match name {
                        "release" => vars.compose.release.clone(),
                        "version" => match vars.compose.release.as_deref() {
                            Some("rawhide") => Some(vars.releases.rawhide.clone().ok_or_else(|| {
                                TemplateError(format!(
                                    "`{}` needs {{version}}, which for a Rawhide compose is `[release] rawhide`; set it",
                                    self.0
                                ))
                            })?),
                            other => other.map(str::to_string),
                        },
                        "compose_id" => Some(vars.compose.id.clone()),
                        "date" => vars.compose.date.clone(),
                        "respin" => vars.compose.respin.map(|r| r.to_string()),
                        "tag" => vars.tag.map(str::to_string),
                        "arch" => vars.arch.map(|a| a.to_string()),
                        _ => None,
                    };
                    let value = value.ok_or_else(|| {
                        TemplateError(format!(
                            "`{}` needs {{{name}}}, which compose {} does not give here",
                            self.0, vars.compose.id
                        ))
                    })?;
                    out.push_str(&value);
                }
            }
        }
        Ok(out)
    }

    /// Whether the template refers to `{name}`.
    pub fn uses(&self, name: &str) -> bool {
        pieces(&self.0).any(|p| matches!(p, Ok(Piece::Var(n)) if n == name))
    }
}

/// The OCI distribution spec's tag grammar.
pub fn is_valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

fn pieces(s: &str) -> impl Iterator<Item = Result<Piece<'_>, TemplateError>> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find('{') {
            Some(0) => match rest.find('}') {
                Some(end) => {
                    let name = &rest[1..end];
                    rest = &rest[end + 1..];
                    Some(Ok(Piece::Var(name)))
                }
                None => {
                    rest = "";
                    Some(Err(TemplateError(format!("unclosed `{{` in `{s}`"))))
                }
            },
            Some(i) => {
                let text = &rest[..i];
                rest = &rest[i..];
                Some(Ok(Piece::Text(text)))
            }
            None => {
                let text = rest;
                rest = "";
                Some(Ok(Piece::Text(text)))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ComposeStatus;

    #[test]
    fn renders_and_checks() {
        let mut compose = Compose::from_id("Fedora-41-20241101.n.2", ComposeStatus::Finished);
        compose.release = Some("41".into());
        let releases = Releases::default();
        let vars = Vars {
            compose: &compose,
            releases: &releases,
            tag: Some("41"),
            arch: Some(Arch::Aarch64),
        };
        let t = |s: &str| Template::parse(s).unwrap().render(&vars);
        assert_eq!(t("{release}").unwrap(), "41");
        assert_eq!(t("{tag}-{arch}").unwrap(), "41-aarch64");
        assert_eq!(t("{release}-{date}.{respin}").unwrap(), "41-20241101.2");
        assert!(t("{compose_id}").is_ok());
        assert!(Template::parse("{relase}")
            .unwrap_err()
            .to_string()
            .contains("unknown placeholder `{relase}`"));
        assert!(Template::parse("{release").is_err());
        assert!(Template::parse("").is_err());
        let bare = Compose::from_id("local", ComposeStatus::Finished);
        let vars = Vars {
            compose: &bare,
            releases: &releases,
            tag: None,
            arch: None,
        };
        assert!(Template::parse("{release}")
            .unwrap()
            .render(&vars)
            .unwrap_err()
            .to_string()
            .contains("needs {release}"));
        assert!(Template::parse("a:b").unwrap().render(&vars).is_err());
    }

    #[test]
    fn version_and_release_conditions() {
        let releases = Releases {
            latest: Some("42".into()),
            rawhide: Some("44".into()),
        };
        let compose = |release: &str| {
            let mut c = Compose::from_id("Fedora-X-20241101.n.0", ComposeStatus::Finished);
            c.release = Some(release.into());
            c
        };
        let version = Template::parse("{version}").unwrap();
        // (release, {version}, rawhide, latest, branched, stable)
        for (release, v, rawhide, latest, branched, stable) in [
            ("rawhide", "44", true, false, false, false),
            ("43", "43", false, false, true, false),
            ("42", "42", false, true, false, true),
            ("41", "41", false, false, false, true),
        ] {
            let c = compose(release);
            let vars = Vars {
                compose: &c,
                releases: &releases,
                tag: None,
                arch: None,
            };
            assert_eq!(version.render(&vars).unwrap(), v, "{release}");
            let holds = |w: When| w.holds(c.release.as_deref(), &releases).unwrap();
            assert_eq!(
                [When::Rawhide, When::Latest, When::Branched, When::Stable].map(holds),
                [rawhide, latest, branched, stable],
                "{release}"
            );
        }
        let c = compose("rawhide");
        let none = Releases::default();
        let vars = Vars {
            compose: &c,
            releases: &none,
            tag: None,
            arch: None,
        };
        assert!(version
            .render(&vars)
            .unwrap_err()
            .to_string()
            .contains("`[release] rawhide`"));
        assert!(When::Latest.holds(Some("41"), &none).is_err());
        assert!(When::Rawhide.holds(Some("rawhide"), &none).unwrap());
        assert_eq!("stable".parse::<When>().unwrap(), When::Stable);
        assert!("nightly".parse::<When>().is_err());
        let rule = TagRule {
            template: Template::parse("latest").unwrap(),
            when: Some(When::Latest),
        };
        let c = compose("41");
        let vars = Vars {
            compose: &c,
            releases: &releases,
            tag: None,
            arch: None,
        };
        assert_eq!(rule.render(&vars).unwrap(), None);
        assert!(Template::parse("{version}-x").unwrap().uses("version"));
        let annotation = Template::parse("built from {compose_id}").unwrap();
        assert_eq!(
            annotation.render_text(&vars).unwrap(),
            "built from Fedora-X-20241101.n.0"
        );
    }
}

//! Tag templates: `{release}`, `{compose_id}`, `{date}`, `{respin}`, `{tag}`, `{arch}`.

use std::fmt;

use crate::arch::Arch;
use crate::model::Compose;

const NAMES: [&str; 6] = ["release", "compose_id", "date", "respin", "tag", "arch"];

/// A template checked when the configuration is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(String);

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
    pub compose: &'a Compose,
    pub tag: Option<&'a str>,
    pub arch: Option<Arch>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        if s.is_empty() {
            return Err(TemplateError("a tag template may not be empty".into()));
        }
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

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text with every placeholder filled in, checked to be a valid tag.
    pub fn render(&self, vars: &Vars<'_>) -> Result<String, TemplateError> {
        let mut out = String::new();
        for piece in pieces(&self.0) {
            match piece? {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(name) => {
                    let value = match name {
                        "release" => vars.compose.release.clone(),
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
        if !is_valid_tag(&out) {
            return Err(TemplateError(format!(
                "`{}` gives `{out}`, which is not a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})",
                self.0
            )));
        }
        Ok(out)
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
        let vars = Vars {
            compose: &compose,
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
}

//! Text that comes from outside (a compose, a registry, a hub, a plugin) on
//! its way to a terminal or a report: control characters (newlines, escape
//! sequences) are shown escaped, and the length is bounded.

/// At most this many characters of one untrusted text are kept.
pub const MAX_UNTRUSTED: usize = 1000;

/// `s` with every control character escaped (`\n`, `\u{1b}`) and at most
/// [`MAX_UNTRUSTED`] characters, marked `…` when cut.
pub fn untrusted(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_UNTRUSTED));
    for (i, c) in s.chars().enumerate() {
        if i == MAX_UNTRUSTED {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(untrusted("out of disk"), "out of disk");
        assert_eq!(
            untrusted("a\nb\x1b[31mred\x07"),
            "a\\nb\\u{1b}[31mred\\u{7}"
        );
        let long = "x".repeat(5000);
        assert_eq!(untrusted(&long).chars().count(), MAX_UNTRUSTED + 1);
    }
}

//! The little time arithmetic the gate needs: RFC 3339 timestamps as Unix
//! seconds, and `max-carry-age` durations like `14d`.

use std::fmt;

/// Seconds since the Unix epoch of an RFC 3339 timestamp
/// (`2024-11-01T12:00:00Z`, `2024-11-01T12:00:00.123456789+02:00`).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let rb = rest.as_bytes();
            if rest.len() != 6 || rb[3] != b':' {
                return None;
            }
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration written as numbers with units: `14d`, `36h`, `2w`, `1d12h`, `90m`, `30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age {
    /// The age in seconds.
    pub seconds: i64,
}

/// A duration that cannot be read: why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAge(pub String);

impl fmt::Display for BadAge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad duration `{}`: write a number and a unit (s, m, h, d, w), e.g. `14d` or `1d12h`",
            self.0
        )
    }
}

impl std::error::Error for BadAge {}

impl std::str::FromStr for Age {
    type Err = BadAge;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadAge(s.to_string());
        let mut seconds: i64 = 0;
        let mut number = String::new();
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => return Err(bad()),
            };
            let n: i64 = number.parse().map_err(|_| bad())?;
            seconds = n
                .checked_mul(unit)
                .and_then(|v| seconds.checked_add(v))
                .ok_or_else(bad)?;
            number.clear();
        }
        if !number.is_empty() || seconds == 0 && s.trim().is_empty() {
            return Err(bad());
        }
        Ok(Age { seconds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-11-01T00:00:00Z"), Some(1_730_419_200));
        assert_eq!(
            parse_rfc3339("2024-11-01T02:00:00+02:00"),
            Some(1_730_419_200)
        );
        assert_eq!(
            parse_rfc3339("2024-11-01T00:00:00.123456789Z"),
            Some(1_730_419_200)
        );
        assert_eq!(parse_rfc3339("2024-02-29T00:00:01Z"), Some(1_709_164_801));
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2024-11-01T00:00:00"), None);
    }

    #[test]
    fn ages() {
        assert_eq!("14d".parse::<Age>().unwrap().seconds, 14 * 86_400);
        assert_eq!("1d12h".parse::<Age>().unwrap().seconds, 36 * 3600);
        assert_eq!("2w".parse::<Age>().unwrap().seconds, 14 * 86_400);
        assert!("14".parse::<Age>().is_err());
        assert!("d".parse::<Age>().is_err());
        assert!("".parse::<Age>().is_err());
        assert!("14 days".parse::<Age>().is_err());
    }
}

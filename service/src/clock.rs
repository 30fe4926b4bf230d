//! The wall clock, and the two ways the service writes a time:
//! fedora-messaging's `sent-at` (RFC 3339) and a mail's `Date` (RFC 5322).

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// (year, month, day, seconds into the day) of Unix seconds, from the
/// civil calendar (H. Hinnant's algorithm).
fn civil(secs: i64) -> (i64, i64, i64, i64) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem)
}

/// As fedora-messaging writes `sent-at`: `2024-11-01T10:00:00+00:00`.
pub(crate) fn rfc3339(secs: i64) -> String {
    let (year, month, day, rem) = civil(secs);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// As a mail's `Date` header: `Fri, 01 Nov 2024 10:00:00 +0000`.
pub(crate) fn rfc5322(secs: i64) -> String {
    let (year, month, day, rem) = civil(secs);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
        [secs.div_euclid(86_400).rem_euclid(7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year:04} {:02}:{:02}:{:02} +0000",
        months[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_each_reader_wants() {
        // 2024-11-01T10:00:00Z was a Friday.
        assert_eq!(rfc3339(1_730_455_200), "2024-11-01T10:00:00+00:00");
        assert_eq!(rfc5322(1_730_455_200), "Fri, 01 Nov 2024 10:00:00 +0000");
        assert_eq!(rfc5322(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    }
}

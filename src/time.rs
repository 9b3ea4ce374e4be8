//! Wall-clock helpers shared by the stores and the HTTP layer (RFC 3339 text, Unix milliseconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (the embedded store's time representation).
pub fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

pub fn from_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// `2026-11-26T04:03:53Z`: whole seconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses RFC 3339 text (`2026-11-26T04:03:53Z`, `…T04:03:53.25+02:00`; `t`/`z`/space accepted
/// as RFC 3339 allows). Fractions finer than a millisecond are cut; years before 1970 or
/// after 9999 are refused, since no session can expire then.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let days_in_month = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    // A leap second (:60) is read as the last second of its minute.
    if !(1970..=9999).contains(&y) || d < 1 || d > days_in_month || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &b[start..i.min(start + 3)];
        millis = digits
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
            * 10i64.pow(3 - digits.len() as u32);
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + sec.min(59)
        - offset;
    Some(from_millis(secs.checked_mul(1000)?.checked_add(millis)?))
}

/// (year, month, day) to days since 1970-01-01: the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Like [`rfc3339`], with milliseconds when there are any (`…T04:03:53.250Z`), so that an
/// absolute expiry given to the millisecond reads back as given.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let ms = to_millis(t).rem_euclid(1000);
    let whole = rfc3339(t);
    if ms == 0 {
        whole
    } else {
        format!("{}.{ms:03}Z", &whole[..whole.len() - 1])
    }
}

/// Seconds from `now` until `t`, rounded up, never negative.
pub fn secs_until(t: SystemTime, now: SystemTime) -> u64 {
    match t.duration_since(now) {
        Ok(d) => d.as_secs() + u64::from(d.subsec_nanos() > 0),
        Err(_) => 0,
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days` algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(from_millis(1_499_827_339_000)),
            "2017-07-12T02:42:19Z"
        );
        assert_eq!(
            rfc3339(from_millis(951_782_400_000)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(from_millis(4_107_542_399_000)),
            "2100-02-28T23:59:59Z"
        );
    }

    #[test]
    fn millis_round_trip_and_ceiling() {
        let t = from_millis(1_700_000_000_123);
        assert_eq!(to_millis(t), 1_700_000_000_123);
        assert_eq!(secs_until(t, from_millis(1_700_000_000_000)), 1);
        assert_eq!(secs_until(t, from_millis(1_800_000_000_000)), 0);
    }

    #[test]
    fn parses_rfc3339_and_refuses_the_rest() {
        let p = |s: &str| parse_rfc3339(s).map(to_millis);
        assert_eq!(p("2017-07-12T02:42:19Z"), Some(1_499_827_339_000));
        assert_eq!(p("2017-07-12t04:42:19.5+02:00"), Some(1_499_827_339_500));
        assert_eq!(
            p("2017-07-11T23:42:19.123456-03:00"),
            Some(1_499_827_339_123)
        );
        assert_eq!(p("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        for t in [4_107_542_399_000, 0, 1_700_000_000_000] {
            assert_eq!(p(&rfc3339(from_millis(t))), Some(t));
        }
        for bad in [
            "",
            "2017-07-12",
            "2017-07-12T02:42:19",
            "2017-02-29T00:00:00Z",
            "2017-13-01T00:00:00Z",
            "2017-07-12T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2017-07-12T02:42:19.Z",
            "2017-07-12T02:42:19+0200",
            "2017-07-12T02:42:19Zjunk",
            "+2017-07-12T02:42:19Z",
            "２017-07-12T02:42:19Z",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }
}

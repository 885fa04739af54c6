//! Wall-clock timestamps for twins and jobs.
//!
//! Twins and job history carry wall-clock times (`lastUpdatedTime`, `startTimeUtc`, ...)
//! which the preview serialises as ISO 8601 / RFC 3339 strings. State machines never read a
//! clock: callers pass `now` in, so tests can run on a simulated clock.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall-clock instant: milliseconds since the Unix epoch (UTC).
///
/// Serialises as an RFC 3339 string with millisecond precision, e.g.
/// `2016-04-29T12:00:00.000Z`. Runs from the epoch to [`Timestamp::MAX`],
/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write: a later one given in
/// milliseconds is taken as `MAX` (so whatever is stored or exported reads back; a year
/// past 9999 would not parse).
///
/// ```
/// use twinhub::Timestamp;
/// let t = Timestamp::from_millis(1_461_931_200_000);
/// assert_eq!(t.to_string(), "2016-04-29T12:00:00.000Z");
/// assert_eq!("2016-04-29T12:00:00Z".parse::<Timestamp>().unwrap(), t);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The last instant a timestamp holds, 9999-12-31T23:59:59.999Z.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// A timestamp from milliseconds since the Unix epoch, at most [`Timestamp::MAX`].
    pub const fn from_millis(ms: u64) -> Self {
        if ms > Self::MAX.0 {
            Self::MAX
        } else {
            Timestamp(ms)
        }
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The current time from the system clock. Only drivers call this; state machines take
    /// `now` as an argument.
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    /// This timestamp moved forward by `d` (saturating at [`Timestamp::MAX`]).
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp::from_millis(
            self.0
                .saturating_add(d.as_millis().min(u128::from(u64::MAX)) as u64),
        )
    }

    /// The time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

// Civil-from-days and days-from-civil: Howard Hinnant's public-domain algorithms.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS.fffZ` written digit by digit into a buffer, for years up to
    /// 9999 (`None` beyond). Serialising a page of twins writes two dozen timestamps a
    /// twin; through `core::fmt` they took about a third of the page's time (the
    /// `first_100_views_to_json` bench: 1.76 ms -> 0.79-0.92 ms at 100k twins).
    fn rfc3339(self) -> Option<[u8; 24]> {
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
        if !(0..=9999).contains(&y) {
            return None;
        }
        let sod = secs % 86_400;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y as u64);
        put(5, 2, mo as u64);
        put(8, 2, d as u64);
        put(11, 2, sod / 3600);
        put(14, 2, (sod / 60) % 60);
        put(17, 2, sod % 60);
        put(20, 3, ms);
        Some(out)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.rfc3339() {
            return f.write_str(std::str::from_utf8(&text).expect("ASCII digits"));
        }
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
        let sod = secs % 86_400;
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

/// Why a string is not an RFC 3339 UTC timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampParseError {
    /// The text that failed to parse (truncated to 64 bytes).
    pub input: String,
}

impl fmt::Display for TimestampParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid timestamp {:?}: expected YYYY-MM-DDTHH:MM:SS[.fff]Z",
            self.input
        )
    }
}

impl std::error::Error for TimestampParseError {}

impl std::str::FromStr for Timestamp {
    type Err = TimestampParseError;

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`; from the epoch to
    /// [`Timestamp::MAX`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_millis(s.as_bytes())
            .map(Timestamp)
            .ok_or_else(|| TimestampParseError {
                input: s.chars().take(64).collect(),
            })
    }
}

/// Two ASCII digits at `b[i..i + 2]` as a number.
#[inline]
fn two_digits(b: &[u8], i: usize) -> Option<u32> {
    let (x, y) = (b[i].wrapping_sub(b'0'), b[i + 1].wrapping_sub(b'0'));
    (x < 10 && y < 10).then_some(u32::from(x) * 10 + u32::from(y))
}

/// Milliseconds since the epoch of an RFC 3339 date-time. On bytes, with every field
/// checked in place and no allocation: an NDJSON import parses two dozen a twin.
fn parse_millis(b: &[u8]) -> Option<u64> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let y = two_digits(b, 0)? * 100 + two_digits(b, 2)?;
    let (mo, d) = (two_digits(b, 5)?, two_digits(b, 8)?);
    let (h, mi, se) = (two_digits(b, 11)?, two_digits(b, 14)?, two_digits(b, 17)?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let dim = match mo {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if d == 0 || d > dim {
        return None;
    }
    let mut i = 19;
    let mut ms = 0u64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                ms = ms * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start || i - start > 9 {
            return None;
        }
        for _ in (i - start)..3 {
            ms *= 10;
        }
    }
    let offset_secs: i64 = match &b[i..] {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (two_digits(b, i + 1)?, two_digits(b, i + 4)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + se.min(59)) - offset_secs;
    u64::try_from(secs)
        .ok()
        .map(|secs| secs * 1000 + ms)
        .filter(|&ms| ms <= Timestamp::MAX.0)
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339() {
            Some(text) => s.serialize_str(std::str::from_utf8(&text).expect("ASCII digits")),
            None => s.collect_str(self),
        }
    }
}

/// Parses the text in place (`Cow<str>`'s own impl would copy it into a `String` first).
impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 date-time")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Timestamp, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

/// The longest duration a configuration takes, a year: the bundled server's
/// (`ServerConfig::validate`), the CoAP endpoint's (`EndpointConfig::validate`) and the
/// job engine's (`EngineConfig::validate`) refuse longer ones. Time-outs and windows are
/// added to the clock, and one as long as [`Duration::MAX`](std::time::Duration::MAX)
/// would overflow it (a panic on the thread that runs them); nothing a device, a job or a
/// hub needs waits a year (a registration's own lifetime, at most 2^32 s, is the
/// device's, not a setting). From JSON (whole milliseconds in a `u64`) no duration
/// overflows the clock, but a longer one than this is refused all the same. The job
/// engine's `retainForMs` is no time-out and has no such bound: it is only added to a
/// job's end time on the wall clock, saturating (`EngineConfig::validate`).
pub const MAX_CONFIG_DURATION: std::time::Duration =
    std::time::Duration::from_secs(366 * 24 * 3600);

/// A [`Duration`](std::time::Duration) as whole milliseconds in JSON (sub-millisecond
/// parts are dropped): `#[serde(with = "crate::time::millis")]`.
pub(crate) mod millis {
    use std::time::Duration;

    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let ms = <u64 as serde::Deserialize>::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

/// An optional [`Duration`](std::time::Duration) as whole milliseconds or `null`:
/// `#[serde(with = "crate::time::millis_opt")]`.
pub(crate) mod millis_opt {
    use std::time::Duration;

    pub(crate) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis().min(u64::MAX as u128) as u64)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let ms = <Option<u64> as serde::Deserialize>::deserialize(d)?;
        Ok(ms.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_epoch_and_leap_day() {
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00.000Z");
        let t: Timestamp = "2024-02-29T23:59:59.5Z".parse().unwrap();
        assert_eq!(t.to_string(), "2024-02-29T23:59:59.500Z");
    }

    #[test]
    fn offsets_normalise_to_utc() {
        let a: Timestamp = "2016-04-29T14:00:00+02:00".parse().unwrap();
        let b: Timestamp = "2016-04-29T12:00:00Z".parse().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_bad_dates() {
        for bad in [
            "",
            "2023-02-29T00:00:00Z",
            "2016-13-01T00:00:00Z",
            "2016-04-29 12:00:00",
            "2016-04-29T12:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2016-04-29T12:00:00+0200",
            // Found by cargo-fuzz: a field ending inside a multi-byte character.
            "2041-62-09T12:00:0\u{265}",
            "2016-04-29T12:00:00+0\u{e9}:00",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?} parsed");
        }
    }

    /// The parser before the in-place one, kept as its reference.
    fn reference_parse(s: &str) -> Result<Timestamp, TimestampParseError> {
        let err = || TimestampParseError {
            input: s.chars().take(64).collect(),
        };
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return Err(err());
        }
        if b[13] != b':' || b[16] != b':' {
            return Err(err());
        }
        // On bytes: a field may end inside a multi-byte character of bad input.
        let num = |r: std::ops::Range<usize>| -> Result<u32, TimestampParseError> {
            let part = &b[r];
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(err());
            }
            Ok(part.iter().fold(0u32, |n, &c| n * 10 + u32::from(c - b'0')))
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || h > 23 || mi > 59 || se > 60 {
            return Err(err());
        }
        let dim = match mo {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if d == 0 || d > dim {
            return Err(err());
        }
        let mut i = 19;
        let mut ms = 0u64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 3 {
                    ms = ms * 10 + (b[i] - b'0') as u64;
                }
                i += 1;
            }
            if i == start || i - start > 9 {
                return Err(err());
            }
            for _ in (i - start)..3 {
                ms *= 10;
            }
        }
        let offset_secs: i64 = match &s[i..] {
            "Z" | "z" => 0,
            rest if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
                if rest.as_bytes()[3] != b':' {
                    return Err(err());
                }
                let oh = num(i + 1..i + 3)? as i64;
                let om = num(i + 4..i + 6)? as i64;
                if oh > 23 || om > 59 {
                    return Err(err());
                }
                let o = oh * 3600 + om * 60;
                if rest.starts_with('-') { -o } else { o }
            }
            _ => return Err(err()),
        };
        let days = days_from_civil(y as i64, mo, d);
        let secs =
            days * 86_400 + (h as i64) * 3600 + (mi as i64) * 60 + se.min(59) as i64 - offset_secs;
        if secs < 0 || secs as u64 * 1000 + ms > Timestamp::MAX.0 {
            return Err(err());
        }
        Ok(Timestamp(secs as u64 * 1000 + ms))
    }

    /// The text `core::fmt` writes (what `Display` wrote before the digit-by-digit path).
    fn formatted(t: Timestamp) -> String {
        let (ms, secs) = (t.0 % 1000, t.0 / 1000);
        let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
        let sod = secs % 86_400;
        format!(
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }

    #[test]
    fn times_past_9999_are_the_last_instant_of_9999_and_read_back() {
        for ms in [253_402_300_800_000, u64::MAX] {
            let t = Timestamp::from_millis(ms); // 10000-01-01, and the largest
            assert_eq!(t, Timestamp::MAX);
            assert_eq!(t.to_string(), "9999-12-31T23:59:59.999Z");
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        }
        assert_eq!(Timestamp::MAX.saturating_add(Duration::MAX), Timestamp::MAX);
        // Past the end by way of an offset: refused, not wrapped.
        assert!("9999-12-31T23:30:00-01:00".parse::<Timestamp>().is_err());
        assert!("9999-12-31T23:30:00+01:00".parse::<Timestamp>().is_ok());
    }

    proptest! {
        #[test]
        fn parses_what_the_reference_parser_parses(
            text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?([Zz]|[+-][0-9]{2}:?[0-9]{2}|\u{e9})?",
            junk in "[-0-9T:.Z+\u{e9}]{0,30}",
        ) {
            for t in [&text, &junk] {
                let ours = t.parse::<Timestamp>().map_err(|e| e.to_string());
                let theirs = reference_parse(t).map_err(|e| e.to_string());
                prop_assert_eq!(ours, theirs, "{:?}", t);
            }
        }

        #[test]
        fn display_parse_round_trip(ms in any::<u64>()) {
            let t = Timestamp::from_millis(ms);
            prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }

        #[test]
        fn display_and_serde_write_what_core_fmt_writes(ms in 0u64..300_000_000_000_000) {
            let t = Timestamp::from_millis(ms);
            let text = formatted(t);
            prop_assert_eq!(t.to_string(), text.clone());
            prop_assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{text}\""));
        }
    }
}

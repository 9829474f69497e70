//! TIMEZONE, the time zone of log timestamps: UTC, the machine's zone, a fixed offset, or an IANA region
//! whose offset follows its daylight-saving rules.
//!
//! Regions come from jiff's time zone database: the system's `/usr/share/zoneinfo` where it exists, else
//! the copy bundled into the binary (`tzdb-bundle-always`), so slim containers without zoneinfo still
//! know `Europe/Berlin`.

pub use jiff::tz::TimeZone;
use jiff::tz::{self, Offset};

/// What TIMEZONE accepts, for its help and its errors.
const TIMEZONE_FORMS: &str = "UTC, local, an offset from UTC like +08:00, -0530 or UTC+8, a fixed IANA \
     zone like Etc/GMT-8, or an IANA region like Asia/Shanghai or Europe/Berlin";

/// Names of UTC in the IANA database and in common use.
const UTC_NAMES: &[&str] = &[
    "UTC",
    "UCT",
    "GMT",
    "GMT0",
    "Z",
    "Zulu",
    "Universal",
    "Greenwich",
    "Etc/UTC",
    "Etc/UCT",
    "Etc/GMT",
    "Etc/GMT0",
    "Etc/GMT+0",
    "Etc/GMT-0",
    "Etc/Universal",
    "Etc/Zulu",
    "Etc/Greenwich",
];

/// TIMEZONE as a time zone. Accepted: `local` (the machine's zone, from `TZ` or `/etc/localtime`; UTC
/// when neither says); UTC and its IANA aliases (`Etc/UTC`, `GMT`, `Z`, …); an offset (`+08:00`,
/// `-0530`, `+8`, `UTC+8`, `GMT-3`, east positive); the fixed IANA zones `Etc/GMT±N` (POSIX sign:
/// `Etc/GMT-8` is UTC+08:00); IANA regions (`Asia/Shanghai`, `Europe/Berlin`, matched without regard to
/// case), whose offset changes with daylight saving.
///
/// Names without a `/` other than UTC's (`CET`, `EST`, `CST`, `Japan`) are refused even where the
/// database knows them: abbreviations are ambiguous (`CST` is the database's US Central, not China), so
/// the message asks for a region or an offset.
pub fn parse_timezone(text: &str) -> Result<TimeZone, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(TimeZone::UTC);
    }
    if t.eq_ignore_ascii_case("local") {
        return Ok(TimeZone::system());
    }
    if UTC_NAMES.iter().any(|n| n.eq_ignore_ascii_case(t)) {
        return Ok(TimeZone::UTC);
    }
    let bad = || format!("`{text}` is not a time zone mishards reads; use {TIMEZONE_FORMS}");
    // Etc/GMT+8 is 8 hours *behind* UTC (the POSIX sign convention of the IANA `Etc` zones).
    let lower = t.to_ascii_lowercase();
    if let Some(posix) = lower.strip_prefix("etc/gmt") {
        return match parse_offset(posix) {
            Some(seconds) if seconds % 3600 == 0 => fixed(-seconds).ok_or_else(bad),
            _ => Err(bad()),
        };
    }
    if t.contains('/') {
        return TimeZone::get(t).map_err(|_| unknown_region(text, t));
    }
    let offset = ["utc", "gmt"]
        .iter()
        .find_map(|prefix| lower.strip_prefix(prefix))
        .unwrap_or(&lower);
    parse_offset(offset).and_then(fixed).ok_or_else(bad)
}

/// A zone `seconds` east of UTC all year.
fn fixed(seconds: i32) -> Option<TimeZone> {
    Offset::from_seconds(seconds).ok().map(TimeZone::fixed)
}

/// Why a name with a `/` was refused, with the database's regions of the same city when there are some
/// (`Europe/Shanghai` → `Asia/Shanghai`).
fn unknown_region(text: &str, name: &str) -> String {
    let city = name.rsplit('/').next().unwrap_or(name);
    let same_city: Vec<String> = tz::db()
        .available()
        .map(|n| n.as_str().to_string())
        .filter(|n| {
            n.rsplit('/')
                .next()
                .is_some_and(|c| c.eq_ignore_ascii_case(city))
        })
        .take(3)
        .collect();
    let hint = if same_city.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", same_city.join(" or "))
    };
    format!(
        "`{text}` is not a region of the time zone database{hint}; use {TIMEZONE_FORMS} \
         (`timedatectl list-timezones` lists the regions)"
    )
}

/// `+8`, `-05:30`, `+0530`: seconds east of UTC, at most 14 hours.
fn parse_offset(text: &str) -> Option<i32> {
    let (sign, digits) = if let Some(d) = text.strip_prefix('+') {
        (1, d)
    } else if let Some(d) = text.strip_prefix('-') {
        (-1, d)
    } else {
        return None;
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b':') {
        return None;
    }
    let (hours, minutes) = match digits.split_once(':') {
        Some((h, m)) => (h, m),
        // Only ASCII digits here, so splitting at a byte index is safe.
        None if digits.len() == 4 => digits.split_at(2),
        None => (digits, "0"),
    };
    if hours.is_empty() || hours.len() > 2 || minutes.is_empty() || minutes.len() > 2 {
        return None;
    }
    let hours: i32 = hours.parse().ok()?;
    let minutes: i32 = minutes.parse().ok()?;
    if hours > 14 || minutes > 59 || (hours == 14 && minutes > 0) {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    /// The zone's offset from UTC, in seconds, at `instant` (RFC 3339).
    fn offset_at(zone: &TimeZone, instant: &str) -> i32 {
        let instant: Timestamp = instant.parse().expect("an RFC 3339 instant");
        zone.to_offset(instant).seconds()
    }

    /// The offset of a zone that has one all year.
    fn fixed_offset(text: &str) -> Result<i32, String> {
        let zone = parse_timezone(text)?;
        let winter = offset_at(&zone, "2026-01-15T12:00:00Z");
        assert_eq!(
            winter,
            offset_at(&zone, "2026-07-15T12:00:00Z"),
            "{text} is not fixed"
        );
        Ok(winter)
    }

    #[test]
    fn timezones() {
        assert_eq!(parse_timezone("UTC"), Ok(TimeZone::UTC));
        assert_eq!(parse_timezone("local"), Ok(TimeZone::system()));
        assert_eq!(fixed_offset("-05:30"), Ok(-(5 * 3600 + 1800)));
        assert_eq!(fixed_offset("UTC+8"), Ok(8 * 3600));
        assert_eq!(fixed_offset("GMT-3"), Ok(-3 * 3600));
        assert_eq!(fixed_offset("+0530"), Ok(5 * 3600 + 1800));
        for utc in ["Etc/UTC", "etc/utc", "Z", "GMT", "Universal", "Etc/GMT+0"] {
            assert_eq!(parse_timezone(utc), Ok(TimeZone::UTC), "{utc}");
        }
        // The IANA `Etc` zones count hours with the POSIX sign: Etc/GMT-8 is UTC+08:00.
        assert_eq!(fixed_offset("Etc/GMT-8"), Ok(8 * 3600));
        assert_eq!(fixed_offset("Etc/GMT+5"), Ok(-5 * 3600));
        for bad in [
            "+",
            "+15",
            "+14:30",
            "+1:60",
            "+123",
            "8",
            "CET",
            "+1é2",
            "+é",
            "Etc/GMT+5:30",
            "Etc/GMTx",
            "UTC+",
            "+08:00:00",
        ] {
            assert!(parse_timezone(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn regions_follow_their_offset_at_each_instant() {
        assert_eq!(fixed_offset("Asia/Shanghai"), Ok(8 * 3600));
        assert_eq!(fixed_offset("asia/shanghai"), Ok(8 * 3600), "case");
        let berlin = parse_timezone("Europe/Berlin").expect("Europe/Berlin");
        assert_eq!(offset_at(&berlin, "2026-01-15T12:00:00Z"), 3600);
        assert_eq!(offset_at(&berlin, "2026-07-15T12:00:00Z"), 2 * 3600);
        // Daylight saving starts at 01:00 UTC on the last Sunday of March.
        assert_eq!(offset_at(&berlin, "2026-03-29T00:59:59Z"), 3600);
        assert_eq!(offset_at(&berlin, "2026-03-29T01:00:00Z"), 2 * 3600);
        let new_york = parse_timezone("America/New_York").expect("America/New_York");
        assert_eq!(offset_at(&new_york, "2026-01-15T12:00:00Z"), -5 * 3600);
        assert_eq!(offset_at(&new_york, "2026-07-15T12:00:00Z"), -4 * 3600);
    }

    #[test]
    fn unknown_regions_are_refused_with_the_accepted_forms() {
        let err = parse_timezone("Mars/Olympus").unwrap_err();
        assert!(err.contains("`Mars/Olympus`"), "{err}");
        assert!(
            err.contains("Asia/Shanghai") && err.contains("+08:00") && err.contains("local"),
            "{err}"
        );
        // A city under the wrong area is pointed to its region.
        let err = parse_timezone("Europe/Shanghai").unwrap_err();
        assert!(err.contains("did you mean Asia/Shanghai?"), "{err}");
        // Abbreviations are ambiguous: refused even where the database knows them.
        for abbreviation in ["CST", "EST", "PST8PDT"] {
            let err = parse_timezone(abbreviation).unwrap_err();
            assert!(err.contains("Europe/Berlin"), "{err}");
        }
    }
}

//! Log timestamps in the configured time zone. Each line takes the zone's offset at its own instant, so a
//! process that runs across a daylight-saving change writes the right offset on both sides of it.

use std::fmt;

use jiff::Timestamp;
use jiff::fmt::StdFmtWrite;
use jiff::fmt::temporal::DateTimePrinter;
use jiff::tz::{Offset, TimeZone};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// RFC 3339 with as many fraction digits as the instant needs: `2026-07-15T14:00:00.1234+02:00`, and
/// `…Z` where the offset is zero (the form log lines had before time zones could be regions).
const PRINTER: DateTimePrinter = DateTimePrinter::new();

/// A [`FormatTime`] that writes the current instant in a time zone.
#[derive(Debug, Clone)]
pub struct ZonedTime {
    zone: TimeZone,
}

impl ZonedTime {
    pub fn new(zone: TimeZone) -> ZonedTime {
        ZonedTime { zone }
    }

    fn write(&self, instant: Timestamp, out: impl fmt::Write) -> fmt::Result {
        let offset = self.zone.to_offset(instant);
        let mut out = StdFmtWrite(out);
        let printed = if offset == Offset::UTC {
            PRINTER.print_timestamp(&instant, &mut out)
        } else {
            PRINTER.print_timestamp_with_offset(&instant, offset, &mut out)
        };
        printed.map_err(|_| fmt::Error)
    }
}

impl FormatTime for ZonedTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        self.write(Timestamp::now(), w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(zone: &str, instant: &str) -> String {
        let zone = mishards_config::parse_timezone(zone).expect("a time zone");
        let instant: Timestamp = instant.parse().expect("an RFC 3339 instant");
        let mut out = String::new();
        ZonedTime::new(zone)
            .write(instant, &mut out)
            .expect("writes to a String");
        out
    }

    #[test]
    fn utc_lines_end_in_z_and_keep_only_the_fraction_they_need() {
        assert_eq!(
            stamp("UTC", "2026-01-15T12:00:00.123456789Z"),
            "2026-01-15T12:00:00.123456789Z"
        );
        assert_eq!(
            stamp("UTC", "2026-01-15T12:00:00.5Z"),
            "2026-01-15T12:00:00.5Z"
        );
        assert_eq!(
            stamp("Etc/UTC", "2026-01-15T12:00:00Z"),
            "2026-01-15T12:00:00Z"
        );
    }

    #[test]
    fn fixed_offsets_and_regions() {
        assert_eq!(
            stamp("UTC+8", "2026-01-15T12:00:00Z"),
            "2026-01-15T20:00:00+08:00"
        );
        assert_eq!(
            stamp("Asia/Shanghai", "2026-07-15T12:00:00Z"),
            "2026-07-15T20:00:00+08:00"
        );
        assert_eq!(
            stamp("-05:30", "2026-01-15T12:00:00Z"),
            "2026-01-15T06:30:00-05:30"
        );
    }

    #[test]
    fn each_line_takes_the_offset_of_its_instant() {
        // Berlin's clocks go forward at 01:00 UTC on 2026-03-29: one second apart, an hour apart on the wall.
        assert_eq!(
            stamp("Europe/Berlin", "2026-03-29T00:59:59Z"),
            "2026-03-29T01:59:59+01:00"
        );
        assert_eq!(
            stamp("Europe/Berlin", "2026-03-29T01:00:00Z"),
            "2026-03-29T03:00:00+02:00"
        );
        assert_eq!(
            stamp("Europe/Berlin", "2026-01-15T12:00:00Z"),
            "2026-01-15T13:00:00+01:00"
        );
        assert_eq!(
            stamp("Europe/Berlin", "2026-07-15T12:00:00Z"),
            "2026-07-15T14:00:00+02:00"
        );
    }
}

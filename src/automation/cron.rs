//! `bot.cron` schedules: 5-field cron specs in a time zone, and the
//! decisions around them (when next, whether a missed run is made up),
//! all driven by the caller's clock so the engine and tests inject time.
//!
//! Parsing and matching are croner's (POSIX/Vixie fields, names, ranges,
//! steps, lists, `@daily`-style aliases, plus its `L`/`W`/`#` extensions);
//! the time zone database is jiff's: the system's zoneinfo when there is
//! one, else the copy compiled into the binary, so a container without
//! tzdata still knows every zone.
//!
//! Daylight saving time, as Vixie cron does it: a job at a fixed wall
//! clock time (no `*` in its minute or hour field, lists and ranges
//! allowed) runs once per scheduled time. A time skipped by a spring-forward
//! runs at the first instant after the gap; a time repeated by a fall-back
//! runs at its first occurrence only. A job with `*` in its minute or hour
//! field follows real time: it runs at every wall clock match that exists,
//! so an hourly job runs in both copies of a repeated hour and not in the
//! skipped one.

use std::str::FromStr;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, Zoned};

/// A due run this much past its time was missed (the process was stopped,
/// suspended or stuck), not merely late: it is not run unless the cron
/// catches up.
pub const MISSED_AFTER_MS: u64 = 60_000;

/// A spec must match at least once within this many years to be accepted
/// (28 years cover every weekday and leap year combination in a century).
const HORIZON_YEARS: i16 = 28;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("bad cron spec {spec:?}: {reason}")]
    Spec { spec: String, reason: String },
    #[error("unknown time zone {0:?}; use an IANA name such as \"Europe/Berlin\" or \"UTC\"")]
    Zone(String),
}

/// A time zone and the name it is shown by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    tz: TimeZone,
    name: String,
}

impl Zone {
    /// An IANA zone by name ("Europe/Berlin", "UTC").
    pub fn named(name: &str) -> Result<Zone, CronError> {
        let tz = jiff::tz::db()
            .get(name)
            .map_err(|_| CronError::Zone(name.to_string()))?;
        Ok(Zone {
            tz,
            name: name.to_string(),
        })
    }

    pub fn utc() -> Zone {
        Zone {
            tz: TimeZone::UTC,
            name: "UTC".into(),
        }
    }

    /// The system's zone (`TZ`, /etc/localtime); UTC, with a warning, when
    /// the system has none jiff can read.
    pub fn system() -> Zone {
        match TimeZone::try_system() {
            Ok(tz) => {
                let name = tz.iana_name().unwrap_or("system").to_string();
                Zone { tz, name }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no system time zone; cron schedules use UTC");
                Zone::utc()
            }
        }
    }

    /// `[script] timezone` if set, else the system's.
    pub fn configured(name: Option<&str>) -> Result<Zone, CronError> {
        name.map_or_else(|| Ok(Zone::system()), Zone::named)
    }

    /// A cron's `{tz=}` if given, else `default`.
    pub fn pick(tz: Option<&str>, default: &Zone) -> Result<Zone, CronError> {
        tz.map_or_else(|| Ok(default.clone()), Zone::named)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }
}

/// A parsed spec in a zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    spec: String,
    cron: Cron,
    zone: Zone,
    /// Fixed wall clock times (see the module doc).
    fixed: bool,
}

impl Schedule {
    pub fn parse(spec: &str, zone: Zone) -> Result<Schedule, CronError> {
        let fail = |reason: String| CronError::Spec {
            spec: spec.to_string(),
            reason,
        };
        let trimmed = spec.trim();
        if trimmed.is_empty() {
            return Err(fail(
                "empty; expected 5 fields: minute hour day-of-month month day-of-week".into(),
            ));
        }
        if let Some(alias) = trimmed.strip_prefix('@') {
            if !ALIASES.iter().any(|a| a.eq_ignore_ascii_case(alias)) {
                return Err(fail(format!(
                    "unknown alias @{alias}; known: @{}",
                    ALIASES.join(", @")
                )));
            }
        } else {
            let n = trimmed.split_whitespace().count();
            if n != 5 {
                return Err(fail(format!(
                    "{n} field{}; expected 5: minute hour day-of-month month day-of-week",
                    if n == 1 { "" } else { "s" }
                )));
            }
        }
        let cron = parse_5(trimmed).map_err(|e| fail(locate(&e, trimmed)))?;
        let fixed = !cron.pattern.minutes.from_wildcard && !cron.pattern.hours.from_wildcard;
        let schedule = Schedule {
            spec: spec.to_string(),
            cron,
            zone,
            fixed,
        };
        // A spec like "0 0 30 2 *" parses but never runs: say so now. The
        // search is given a year range, or croner would look until 5000.
        if !trimmed.starts_with('@') && !matches_within_horizon(trimmed) {
            return Err(fail("never matches a real date".into()));
        }
        Ok(schedule)
    }

    pub fn spec(&self) -> &str {
        &self.spec
    }

    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The first run strictly after `after_ms` (Unix milliseconds), or
    /// `None` if there is none within reach.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = Timestamp::from_millisecond(i64::try_from(after_ms).ok()?).ok()?;
        let next = if self.fixed {
            self.next_fixed(after)?
        } else {
            let from = after.to_zoned(self.zone.tz.clone());
            self.cron
                .find_next_occurrence::<Zoned>(&from, false)
                .ok()?
                .timestamp()
        };
        u64::try_from(next.as_millisecond()).ok()
    }

    /// Wall clock matches after `after`'s wall clock time, each mapped to
    /// the instant it runs at; the first one past `after` wins. The mapping
    /// never goes backwards (a repeated time takes its first instant, a
    /// skipped one the gap's end), so no earlier wall clock time can win.
    fn next_fixed(&self, after: Timestamp) -> Option<Timestamp> {
        let tz = &self.zone.tz;
        let mut civil = tz.to_datetime(after);
        // Bounded: each step moves to a later match, and only the matches
        // of one repeated hour or one gap can map to `after` or before it.
        for _ in 0..10_000 {
            civil = self.cron.find_next_occurrence(&civil, false).ok()?;
            let at = run_instant(tz, civil)?;
            if at > after {
                return Some(at);
            }
        }
        None
    }
}

/// When a wall clock time runs: its only instant, the first of two, or
/// for a time a spring-forward skipped, the instant the gap ends.
fn run_instant(tz: &TimeZone, civil: DateTime) -> Option<Timestamp> {
    let amb = tz.to_ambiguous_timestamp(civil);
    match amb.offset() {
        AmbiguousOffset::Unambiguous { offset } | AmbiguousOffset::Fold { before: offset, .. } => {
            offset.to_timestamp(civil).ok()
        }
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the offset after the gap, the time lies before the
            // transition; the next transition is the gap's end.
            let before_gap = after.to_timestamp(civil).ok()?;
            tz.following(before_gap).next().map(|t| t.timestamp())
        }
    }
}

fn parse_5(spec: &str) -> Result<Cron, croner::errors::CronError> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(spec)
}

/// What croner's aliases stand for is fixed; all of them match.
const ALIASES: [&str; 6] = ["yearly", "annually", "monthly", "weekly", "daily", "hourly"];

fn matches_within_horizon(spec: &str) -> bool {
    let first = 2000;
    let bounded = format!("0 {spec} {first}-{}", first + HORIZON_YEARS - 1);
    let Ok(cron) = CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .build()
        .parse(&bounded)
    else {
        return false;
    };
    let from = DateTime::constant(first, 1, 1, 0, 0, 0, 0);
    cron.find_next_occurrence(&from, true).is_ok()
}

const FIELDS: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

/// croner's reason, with the field it is about: croner does not say which
/// one, so each field is tried alone with the others set to `*`.
fn locate(e: &croner::errors::CronError, spec: &str) -> String {
    use croner::errors::CronError as E;
    let reason = match e {
        E::InvalidPattern(m) | E::IllegalCharacters(m) | E::ComponentError(m) => m.clone(),
        other => other.to_string(),
    };
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return reason;
    }
    for (i, field) in fields.iter().enumerate() {
        let mut alone = ["*"; 5];
        alone[i] = field;
        if let Err(e) = parse_5(&alone.join(" ")) {
            let why = match e {
                E::InvalidPattern(m) | E::IllegalCharacters(m) | E::ComponentError(m) => m,
                other => other.to_string(),
            };
            return format!("{} field {field:?}: {why}", FIELDS[i]);
        }
    }
    reason
}

/// One registered cron as the engine drives it: ask [`next_due`], sleep
/// until then on your clock, call [`poll`], run the handler if it says so.
///
/// [`next_due`]: CronTimer::next_due
/// [`poll`]: CronTimer::poll
#[derive(Debug, Clone)]
pub struct CronTimer {
    schedule: Schedule,
    catch_up: bool,
    next: Option<u64>,
}

impl CronTimer {
    /// Registers a cron at `now_ms`. `last_seen_ms` is the last instant a
    /// running host had this cron registered (when it was registered or
    /// last ran), as the engine persisted it; `None` for a new cron. The
    /// bool says whether to run the handler once right away: only with
    /// `catch_up`, and only if a scheduled run fell between `last_seen_ms`
    /// and now, while no host was there to run it. However many were
    /// missed, it runs once.
    pub fn start(
        schedule: Schedule,
        catch_up: bool,
        now_ms: u64,
        last_seen_ms: Option<u64>,
    ) -> (CronTimer, bool) {
        let missed = last_seen_ms
            .filter(|seen| *seen < now_ms)
            .and_then(|seen| schedule.next_after(seen))
            .is_some_and(|run| run <= now_ms);
        let next = schedule.next_after(now_ms);
        (
            CronTimer {
                schedule,
                catch_up,
                next,
            },
            catch_up && missed,
        )
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// When the next run is due; `None`: never again.
    pub fn next_due(&self) -> Option<u64> {
        self.next
    }

    /// Called when the clock reaches `next_due` (early calls are fine):
    /// whether to run the handler now. A due run that is more than
    /// [`MISSED_AFTER_MS`] late was missed and runs only if the cron
    /// catches up; either way the timer moves past `now_ms`, so runs that
    /// piled up while the process slept collapse into at most one.
    pub fn poll(&mut self, now_ms: u64) -> bool {
        let Some(due) = self.next else {
            return false;
        };
        if now_ms < due {
            return false;
        }
        self.next = self.schedule.next_after(now_ms);
        now_ms - due <= MISSED_AFTER_MS || self.catch_up
    }
}

impl FromStr for Zone {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Zone, CronError> {
        Zone::named(s)
    }
}

#[cfg(test)]
mod tests;

//! Schedules against known daylight saving changes (2025: Europe/Berlin
//! springs forward 30 March at 02:00 and falls back 26 October at 03:00;
//! America/New_York 9 March and 2 November at 02:00), and the timer's
//! catch-up rules on an injected clock.

use super::*;

fn ms(rfc3339: &str) -> u64 {
    let ts: Timestamp = rfc3339.parse().unwrap();
    u64::try_from(ts.as_millisecond()).unwrap()
}

fn utc(ms: u64) -> String {
    Timestamp::from_millisecond(i64::try_from(ms).unwrap())
        .unwrap()
        .to_string()
}

fn sched(spec: &str, zone: &str) -> Schedule {
    Schedule::parse(spec, Zone::named(zone).unwrap()).unwrap()
}

/// The next `n` runs after `from`, as UTC instants.
fn runs(s: &Schedule, from: &str, n: usize) -> Vec<String> {
    let mut t = ms(from);
    (0..n)
        .map(|_| {
            t = s.next_after(t).unwrap();
            utc(t)
        })
        .collect()
}

#[test]
fn weekdays_at_eight_skip_the_weekend_and_follow_summer_time() {
    let s = sched("0 8 * * 1-5", "Europe/Berlin");
    // Friday 28 March 09:00 CET; Monday is already summer time (UTC+2).
    assert_eq!(
        runs(&s, "2025-03-28T08:00:00Z", 3),
        [
            "2025-03-31T06:00:00Z",
            "2025-04-01T06:00:00Z",
            "2025-04-02T06:00:00Z"
        ]
    );
    // Names work like numbers; so does 7 for Sunday.
    let named = sched("0 8 * * MON-FRI", "Europe/Berlin");
    assert_eq!(
        runs(&named, "2025-03-28T08:00:00Z", 3),
        runs(&s, "2025-03-28T08:00:00Z", 3)
    );
    assert_eq!(
        runs(&sched("0 12 * * 7", "UTC"), "2025-03-28T00:00:00Z", 1),
        ["2025-03-30T12:00:00Z"]
    );
}

#[test]
fn ranges_steps_lists_months_and_aliases() {
    let s = sched("*/20 9-10 * * *", "UTC");
    assert_eq!(
        runs(&s, "2025-01-01T08:59:00Z", 7),
        [
            "2025-01-01T09:00:00Z",
            "2025-01-01T09:20:00Z",
            "2025-01-01T09:40:00Z",
            "2025-01-01T10:00:00Z",
            "2025-01-01T10:20:00Z",
            "2025-01-01T10:40:00Z",
            "2025-01-02T09:00:00Z"
        ]
    );
    let s = sched("15 6 1 jan,JUL *", "UTC");
    assert_eq!(
        runs(&s, "2025-02-01T00:00:00Z", 2),
        ["2025-07-01T06:15:00Z", "2026-01-01T06:15:00Z"]
    );
    assert_eq!(
        runs(&sched("@daily", "UTC"), "2025-01-01T00:00:00Z", 2),
        ["2025-01-02T00:00:00Z", "2025-01-03T00:00:00Z"]
    );
    assert_eq!(
        runs(&sched("@HOURLY", "UTC"), "2025-01-01T00:30:00Z", 1),
        ["2025-01-01T01:00:00Z"]
    );
    assert_eq!(
        runs(&sched("0 0 29 2 *", "UTC"), "2025-01-01T00:00:00Z", 1),
        ["2028-02-29T00:00:00Z"]
    );
}

#[test]
fn next_after_is_strictly_after() {
    let s = sched("0 8 * * *", "UTC");
    let eight = ms("2025-01-01T08:00:00Z");
    assert_eq!(
        utc(s.next_after(eight - 1).unwrap()),
        "2025-01-01T08:00:00Z"
    );
    assert_eq!(utc(s.next_after(eight).unwrap()), "2025-01-02T08:00:00Z");
    assert_eq!(
        utc(s.next_after(eight + 500).unwrap()),
        "2025-01-02T08:00:00Z"
    );
}

#[test]
fn a_time_skipped_by_spring_forward_runs_once_when_the_gap_ends() {
    // Berlin: 02:00-03:00 does not exist on 30 March.
    let s = sched("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        runs(&s, "2025-03-29T12:00:00Z", 2),
        ["2025-03-30T01:00:00Z", "2025-03-31T00:30:00Z"]
    );
    // Two scheduled times in the same gap still make one run.
    let s = sched("0,30 2 * * *", "Europe/Berlin");
    assert_eq!(
        runs(&s, "2025-03-29T12:00:00Z", 3),
        [
            "2025-03-30T01:00:00Z",
            "2025-03-31T00:00:00Z",
            "2025-03-31T00:30:00Z"
        ]
    );
    // New York: 02:00-03:00 does not exist on 9 March.
    let s = sched("30 2 * * *", "America/New_York");
    assert_eq!(
        runs(&s, "2025-03-08T12:00:00Z", 2),
        ["2025-03-09T07:00:00Z", "2025-03-10T06:30:00Z"]
    );
}

#[test]
fn a_time_repeated_by_fall_back_runs_once_at_its_first_occurrence() {
    // Berlin: 02:00-03:00 happens twice on 26 October (UTC+2, then UTC+1).
    let s = sched("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        runs(&s, "2025-10-25T12:00:00Z", 2),
        ["2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"]
    );
    // Asked from inside the second copy of the hour, it has already run.
    assert_eq!(
        runs(&s, "2025-10-26T01:10:00Z", 1),
        ["2025-10-27T01:30:00Z"]
    );
    // New York: 01:00-02:00 happens twice on 2 November; a list is fixed
    // wall clock times too.
    let s = sched("30 1,13 * * *", "America/New_York");
    assert_eq!(
        runs(&s, "2025-11-01T12:00:00Z", 3),
        [
            "2025-11-01T17:30:00Z",
            "2025-11-02T05:30:00Z",
            "2025-11-02T18:30:00Z"
        ]
    );
}

#[test]
fn wildcard_jobs_follow_real_time_across_the_changes() {
    let hourly = sched("0 * * * *", "Europe/Berlin");
    // Fall back: 02:00 comes twice, an hour apart; both run.
    assert_eq!(
        runs(&hourly, "2025-10-25T23:30:00Z", 3),
        [
            "2025-10-26T00:00:00Z",
            "2025-10-26T01:00:00Z",
            "2025-10-26T02:00:00Z"
        ]
    );
    // Spring forward: 02:00 does not exist; 01:00 is followed by 03:00.
    assert_eq!(
        runs(&hourly, "2025-03-29T23:30:00Z", 3),
        [
            "2025-03-30T00:00:00Z",
            "2025-03-30T01:00:00Z",
            "2025-03-30T02:00:00Z"
        ]
    );
    let half = sched("*/30 * * * *", "America/New_York");
    assert_eq!(
        runs(&half, "2025-03-09T06:45:00Z", 2),
        ["2025-03-09T07:00:00Z", "2025-03-09T07:30:00Z"]
    );
}

#[test]
fn the_compiled_in_database_has_the_zones_and_their_rules() {
    // What a host without /usr/share/zoneinfo uses.
    let bundled = jiff::tz::TimeZoneDatabase::bundled();
    for (name, from, want) in [
        (
            "Europe/Berlin",
            "2025-03-29T12:00:00Z",
            "2025-03-30T01:00:00Z",
        ),
        (
            "America/New_York",
            "2025-03-08T12:00:00Z",
            "2025-03-09T07:00:00Z",
        ),
    ] {
        let zone = Zone {
            tz: bundled.get(name).unwrap(),
            name: name.into(),
        };
        let s = Schedule::parse("30 2 * * *", zone).unwrap();
        assert_eq!(runs(&s, from, 1), [want], "{name}");
    }
}

#[test]
fn zones_by_name_pick_and_default() {
    let berlin = Zone::named("Europe/Berlin").unwrap();
    assert_eq!(berlin.name(), "Europe/Berlin");
    assert_eq!(
        Zone::pick(Some("America/New_York"), &berlin)
            .unwrap()
            .name(),
        "America/New_York"
    );
    assert_eq!(Zone::pick(None, &berlin).unwrap(), berlin);
    assert_eq!(Zone::configured(Some("UTC")).unwrap().name(), "UTC");
    // Whatever this machine's zone is, there is one.
    let _ = Zone::configured(None).unwrap();
    let e = Zone::named("Europe/Berln").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown time zone \"Europe/Berln\"; use an IANA name such as \"Europe/Berlin\" or \"UTC\""
    );
    assert!(Zone::pick(Some("Nowhere/Land"), &berlin).is_err());
    assert!("Asia/Tokyo".parse::<Zone>().is_ok());
}

#[test]
fn bad_specs_say_what_is_wrong() {
    for (spec, want) in [
        ("", "empty; expected 5 fields"),
        ("   ", "empty; expected 5 fields"),
        (
            "0 8 * *",
            "4 fields; expected 5: minute hour day-of-month month day-of-week",
        ),
        ("0 0 8 * * *", "6 fields; expected 5"),
        ("daily", "1 field; expected 5"),
        ("60 * * * *", "minute field \"60\""),
        ("0 24 * * *", "hour field \"24\""),
        ("0 8 0 * *", "day-of-month field \"0\""),
        ("0 8 * 13 *", "month field \"13\""),
        ("0 8 * * 8", "day-of-week field \"8\""),
        ("*/0 * * * *", "minute field \"*/0\": Step cannot be zero"),
        ("0 8 * * MON-FRY", "day-of-week field \"MON-FRY\""),
        ("a b c d e", "minute field \"a\""),
        ("5-1 * * * *", "minute field \"5-1\""),
        (
            "@reboot",
            "unknown alias @reboot; known: @yearly, @annually",
        ),
        ("0 0 30 2 *", "never matches a real date"),
        ("0 0 31 4 *", "never matches a real date"),
    ] {
        let e = Schedule::parse(spec, Zone::utc()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("bad cron spec {spec:?}: ")),
            "{text}"
        );
        assert!(text.contains(want), "{spec:?}: {text}");
    }
}

// ---- the timer ---------------------------------------------------------

fn daily_eight() -> Schedule {
    sched("0 8 * * *", "UTC")
}

#[test]
fn a_new_cron_waits_for_its_first_time() {
    let now = ms("2025-01-02T09:00:00Z");
    for catch_up in [false, true] {
        let (t, run) = CronTimer::start(daily_eight(), catch_up, now, None);
        assert!(!run);
        assert_eq!(utc(t.next_due().unwrap()), "2025-01-03T08:00:00Z");
    }
}

#[test]
fn a_run_missed_while_down_is_made_up_once_only_with_catch_up() {
    let now = ms("2025-01-02T09:00:00Z");
    // Down from 07:00 to 09:00: the 08:00 run was missed.
    let seen = ms("2025-01-02T07:00:00Z");
    let (t, run) = CronTimer::start(daily_eight(), false, now, Some(seen));
    assert!(!run, "not replayed by default");
    assert_eq!(utc(t.next_due().unwrap()), "2025-01-03T08:00:00Z");
    let (t, run) = CronTimer::start(daily_eight(), true, now, Some(seen));
    assert!(run);
    assert_eq!(utc(t.next_due().unwrap()), "2025-01-03T08:00:00Z");
    // Down for three days: still one run.
    let (t, run) = CronTimer::start(daily_eight(), true, now, Some(ms("2024-12-30T00:00:00Z")));
    assert!(run);
    assert_eq!(utc(t.next_due().unwrap()), "2025-01-03T08:00:00Z");
}

#[test]
fn nothing_is_made_up_when_nothing_was_missed() {
    let now = ms("2025-01-02T09:00:00Z");
    // It ran at 08:00 and the host stopped at 08:30.
    let (_, run) = CronTimer::start(daily_eight(), true, now, Some(ms("2025-01-02T08:30:00Z")));
    assert!(!run);
    // The clock went back: the last sighting is in the future.
    let (_, run) = CronTimer::start(daily_eight(), true, now, Some(ms("2025-01-05T00:00:00Z")));
    assert!(!run);
}

#[test]
fn poll_runs_at_the_due_time_and_moves_on() {
    let start = ms("2025-01-02T07:00:00Z");
    let (mut t, _) = CronTimer::start(daily_eight(), false, start, None);
    let due = t.next_due().unwrap();
    assert_eq!(utc(due), "2025-01-02T08:00:00Z");
    assert!(!t.poll(due - 1), "early");
    assert_eq!(t.next_due(), Some(due));
    assert!(t.poll(due + 20), "a little late is still a run");
    assert_eq!(utc(t.next_due().unwrap()), "2025-01-03T08:00:00Z");
    assert!(!t.poll(due + 30), "not twice");
}

#[test]
fn a_run_overslept_by_the_process_is_missed_unless_catching_up() {
    let start = ms("2025-01-02T07:00:00Z");
    // Suspended from 07:30 to 18:00 on days 2 to 4.
    let woke = ms("2025-01-04T18:00:00Z");
    for (catch_up, want) in [(false, false), (true, true)] {
        let (mut t, _) = CronTimer::start(daily_eight(), catch_up, start, None);
        assert_eq!(t.poll(woke), want, "catch_up={catch_up}");
        assert_eq!(utc(t.next_due().unwrap()), "2025-01-05T08:00:00Z");
        assert!(!t.poll(woke + 1));
    }
    // Exactly at the grace limit it still runs.
    let (mut t, _) = CronTimer::start(daily_eight(), false, start, None);
    assert!(t.poll(ms("2025-01-02T08:00:00Z") + MISSED_AFTER_MS));
}

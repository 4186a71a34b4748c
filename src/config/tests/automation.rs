//! `[script] timezone` and `[script.http]`: values, bounds and errors.

use super::*;

#[test]
fn script_http_keys_are_read() {
    let c = parse(
        "[script]\ntimezone = \"UTC\"\n\n[script.http]\ntimeout_ms = 1\nmax_body_mb = 1024\n\
         max_in_flight = 1024\nallow = [\"[::1]\", \"*.home.arpa\"]\n",
    );
    assert_eq!(c.script.timezone.as_deref(), Some("UTC"));
    let h = &c.script.http;
    assert_eq!(
        (h.timeout_ms, h.max_body_mb, h.max_in_flight),
        (1, 1024, 1024)
    );
    assert!(h.allow.allows_ip("::1".parse().unwrap()));
    assert!(h.allow.allows_host("nas.home.arpa"));
    assert!(!h.allow.allows_host("home.arpa"));
    // A dotted key and an empty table work like the section.
    let c = parse("script.http.timeout_ms = 7\n");
    assert_eq!(c.script.http.timeout_ms, 7);
    assert_eq!(
        parse("[script.http]\n").script.http,
        ScriptHttpConfig::default()
    );
    // The other [script] keys are untouched by [script.http].
    assert_eq!(
        parse("[script.http]\nmax_body_mb = 3\n")
            .script
            .hook_timeout_ms,
        1000
    );
}

#[test]
fn bad_script_http_values_name_key_and_line() {
    let cases: &[(&str, &str)] = &[
        (
            "[script.http]\ntimeout_ms = 0\n",
            "moonwire.toml:2: script.http.timeout_ms: must be at least 1",
        ),
        (
            "[script.http]\nmax_body_mb = 0\n",
            "moonwire.toml:2: script.http.max_body_mb: must be between 1 and 1024, got 0",
        ),
        (
            "[script.http]\nmax_body_mb = 1025\n",
            "moonwire.toml:2: script.http.max_body_mb: must be between 1 and 1024, got 1025",
        ),
        (
            "[script.http]\nmax_in_flight = 0\n",
            "moonwire.toml:2: script.http.max_in_flight: must be between 1 and 1024, got 0",
        ),
        (
            "[script.http]\nmax_in_flight = 5000\n",
            "moonwire.toml:2: script.http.max_in_flight: must be between 1 and 1024, got 5000",
        ),
        (
            "[script.http]\nallow = [\n  \"nas.lan\",\n  \"http://x.lan\",\n]\n",
            "moonwire.toml:4: script.http.allow: allow entry \"http://x.lan\" must be",
        ),
        (
            "[script.http]\nallow = [\"a.lan:80\"]\n",
            "moonwire.toml:2: script.http.allow: allow entry \"a.lan:80\" must not carry a port",
        ),
        (
            "[script.http]\nallow = [\"\"]\n",
            "moonwire.toml:2: script.http.allow: allow entry \"\" is empty",
        ),
        (
            "[script.http]\nallow = [\"*\"]\n",
            "moonwire.toml:2: script.http.allow: allow entry \"*\" must be a host name",
        ),
        (
            "[script]\ntimezone = \"Europe/Berln\"\n",
            "moonwire.toml:2: script.timezone: unknown time zone \"Europe/Berln\"",
        ),
        (
            "[script]\ntimezone = \"\"\n",
            "moonwire.toml:2: script.timezone: unknown time zone \"\"",
        ),
    ];
    for (text, want) in cases {
        let msg = file_err(text);
        assert!(
            msg.starts_with(want),
            "for {text:?}:\n got  {msg}\n want {want}..."
        );
    }
}

#[test]
fn unknown_and_mistyped_script_http_keys_are_errors() {
    let msg = file_err("[script.http]\ntimeout = 5\n");
    assert_contains(
        &msg,
        &["moonwire.toml:2: script.http.timeout: unknown field `timeout`"],
    );
    let msg = file_err("[script.http]\nallow = \"*.lan\"\n");
    assert_contains(&msg, &["moonwire.toml:2: script.http.allow: invalid type"]);
    let msg = file_err("[script.http]\ntimeout_ms = -5\n");
    assert_contains(&msg, &["moonwire.toml:2: script.http.timeout_ms:"]);
    let msg = file_err("[script]\ntimezone = 1\n");
    assert_contains(&msg, &["moonwire.toml:2: script.timezone: invalid type"]);
}

//! `moonwire run`: configured instances, the API, and a clean stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Sandbox;

#[tokio::test]
async fn run_serves_the_api_and_stops_cleanly_on_sigterm() {
    let sb = Sandbox::new();
    let port = common::free_port();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        format!(
            "[[instance]]\nname = \"bot\"\nchannel = \"console\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\nkey = \"k\"\n"
        ),
    )
    .unwrap();
    let child = common::spawn_run(sb.cmd());
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/instances/bot");
    let mut state = String::new();
    for _ in 0..200 {
        if let Ok(r) = http.get(&url).bearer_auth("k").send().await {
            let v: serde_json::Value = r.json().await.unwrap();
            state = v["state"].as_str().unwrap_or("").to_string();
            if state == "open" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(state, "open");
    let out = common::terminate(child).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = sb.cmd().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v[0]["name"], "bot");
    assert_eq!(v[0]["connection_status"], "close");
    assert_eq!(v[0]["last_reason_kind"], "stopped");
}

/// The `delay_ms=N` of a log line, if it has one.
fn delay_of(line: &str) -> Option<u64> {
    let at = line.find("delay_ms=")? + "delay_ms=".len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn without_a_server_run_retries_with_backoff_and_says_why() {
    let sb = Sandbox::new();
    // The default instance is WhatsApp; point it at a port nobody listens on.
    let port = common::free_port();
    let api_port = common::free_port();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        format!(
            "[whatsapp]\nurl = \"ws://127.0.0.1:{port}/ws/chat\"\n[reconnect]\nbase_ms = 50\n[api]\nlisten = \"127.0.0.1:{api_port}\"\nkey = \"k\"\n"
        ),
    )
    .unwrap();
    let child = common::spawn_run({
        let mut c = sb.cmd();
        c.env_remove("MOONWIRE_RECONNECT_BASE_MS");
        c
    });
    let mut child = common::Reaper::new(child);
    let mut seen = serde_json::Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let out = sb.cmd().args(["status", "--json"]).output().unwrap();
        seen = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if seen[0]["last_reason_kind"] == "transport_error" {
            break;
        }
    }
    assert_eq!(seen[0]["name"], "default", "{seen}");
    assert_eq!(seen[0]["connection_status"], "connecting", "{seen}");
    assert_eq!(seen[0]["last_reason_kind"], "transport_error", "{seen}");
    // The cause, not only the kind: in the row, the table and the API.
    let cause = seen[0]["last_reason_message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        cause.contains("Connection refused") && cause.contains(&port.to_string()),
        "{seen}"
    );
    let table = sb.cmd().arg("status").output().unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("Connection refused"));
    let api: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{api_port}/v1/instances/default"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        api["last_reason_message"]
            .as_str()
            .is_some_and(|m| m.contains("Connection refused")),
        "{api}"
    );
    let out = common::terminate(child.take()).await;
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reconnecting kind=transport_error"), "{err}");
    // ... and in the state line itself, as a warning.
    let line = err
        .lines()
        .find(|l| l.contains("reconnecting kind=transport_error"))
        .unwrap();
    assert!(
        line.contains("WARN") && line.contains("Connection refused"),
        "{line}"
    );
    // The library's own "Will retry..." / "shutting down" are not shown:
    // nothing there retries, the machine above decides.
    assert!(!err.contains("Will retry"), "{err}");
    assert!(!err.contains("shutting down"), "{err}");
    let out = sb.cmd().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["connection_status"], "close");
    assert_eq!(v[0]["last_reason_kind"], "stopped");
}

#[tokio::test]
async fn against_a_dead_server_exactly_max_per_minute_attempts_start_in_a_minute() {
    let sb = Sandbox::new();
    // The default instance is WhatsApp; point it at a port nobody listens
    // on. Retries come every few ms, so without the per-minute bound far
    // more than 12 would start within the test.
    let port = common::free_port();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        format!(
            "[whatsapp]\nurl = \"ws://127.0.0.1:{port}/ws/chat\"\n[reconnect]\nbase_ms = 10\ncap_ms = 50\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = common::spawn_run({
        let mut c = sb.cmd();
        c.env_remove("MOONWIRE_RECONNECT_BASE_MS");
        c
    });
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Until the bound holds the next attempt back: a reconnect that waits
    // 30 s or more, where the cap is 50 ms.
    let mut err = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let bound_line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                err.push_str(&line);
                err.push('\n');
                if line.contains("reconnecting") && delay_of(&line).is_some_and(|d| d >= 30_000) {
                    break line;
                }
            }
            Err(_) => panic!("the bound never held an attempt back:\n{err}"),
        }
    };
    let out = sb.cmd().args(["status", "--json"]).output().unwrap();
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(seen[0]["name"], "default", "{seen}");
    assert_eq!(seen[0]["connection_status"], "connecting", "{seen}");
    assert_eq!(seen[0]["last_reason_kind"], "transport_error", "{seen}");
    let out = common::terminate(child).await;
    assert!(out.status.success());
    reader.join().unwrap();
    err.extend(lines.try_iter().map(|l| l + "\n"));
    assert!(err.contains("reconnecting kind=transport_error"), "{err}");
    // Every attempt of the run falls in one minute, so all of them count
    // against max_per_minute (12), the user's first connect included.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the run outlasted the minute it bounds"
    );
    // All 12 ran (the bound waited for the window to fill, no sooner), and
    // not one more.
    let attempts = err.matches("connecting attempt=").count();
    assert_eq!(attempts, 12, "held back at: {bound_line}\n{err}");
    let out = sb.cmd().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["connection_status"], "close");
    assert_eq!(v[0]["last_reason_kind"], "stopped");
}

#[test]
fn logout_of_an_instance_that_never_connected_succeeds() {
    let sb = Sandbox::new();
    sb.script(
        "seen.lua",
        "function on_logout(i) bot.log.warn('ON_LOGOUT ' .. i.by) end\n",
    );
    let out = sb.cmd().arg("logout").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("ON_LOGOUT user"), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[default] close / logged_out"
    );
    let out = sb.cmd().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "logged_out");
    assert_eq!(v[0]["last_reason_code"], 401);
    // Twice is fine, and the second, in another process, answers the state
    // the first left: no second logout, no second on_logout, the row as it
    // was.
    let again = sb.cmd().arg("logout").output().unwrap();
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "[default] close / logged_out"
    );
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!err.contains("ON_LOGOUT"), "{err}");
    let out = sb.cmd().args(["status", "--json"]).output().unwrap();
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(w[0]["last_change_at"], v[0]["last_change_at"], "{w}");
    assert_eq!(w[0]["logout_by"], v[0]["logout_by"], "{w}");
}

#[test]
fn pair_after_a_logout_waits_for_the_new_pairing() {
    // A logged-out instance starts logged_out: pair must wait for where its
    // connect ends, not take that state for the answer.
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[[instance]]\nname = \"bot\"\nchannel = \"console\"\n",
    )
    .unwrap();
    for round in 0..3 {
        let out = sb.cmd().arg("logout").output().unwrap();
        assert!(out.status.success(), "round {round}");
        let out = sb.cmd().arg("pair").output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.lines().last(),
            Some("[bot] paired: me@console"),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "round {round}");
    }
}

#[test]
fn pair_and_logout_check_their_arguments() {
    let sb = Sandbox::new();
    for args in [
        vec!["pair", "--phone", "12ab"],
        vec!["pair", "--instance", "nope"],
        vec!["logout", "--instance", "Bad Name"],
    ] {
        let out = sb.cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[2]), "{args:?}: {err}");
    }
}

#[test]
fn a_public_api_address_needs_an_explicit_key() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[[instance]]\nname = \"c\"\nchannel = \"console\"\n[api]\nlisten = \"0.0.0.0:0\"\n",
    )
    .unwrap();
    let out = sb.cmd().arg("run").stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}

#[tokio::test]
async fn logout_of_a_never_paired_instance_dials_nothing_and_warns_nothing() {
    let sb = Sandbox::new();
    // A first attempt that never got a server still leaves the device's
    // keys behind: that is not a pairing.
    let dead = common::free_port();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        format!("[whatsapp]\nurl = \"ws://127.0.0.1:{dead}/ws/chat\"\n"),
    )
    .unwrap();
    let child = common::spawn_run(sb.cmd());
    let mut child = common::Reaper::new(child);
    let mut seen = serde_json::Value::Null;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let out = sb.cmd().args(["status", "--json"]).output().unwrap();
        seen = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if seen[0]["last_reason_kind"] == "transport_error" {
            break;
        }
    }
    assert_eq!(seen[0]["last_reason_kind"], "transport_error", "{seen}");
    assert!(common::terminate(child.take()).await.status.success());
    let db = rusqlite::Connection::open(sb.path().join("data/moonwire.db")).unwrap();
    let keys: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM wa_kv WHERE instance = 'default'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(keys > 0, "the device was made at the first dial");
    drop(db);

    // Now a server that would answer: the logout must not call it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        format!("[whatsapp]\nurl = \"ws://127.0.0.1:{port}/ws/chat\"\n"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = sb.cmd().arg("logout").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[default] close / logged_out"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the logout dialed the server"
    );
    assert!(!err.contains("phone may still list"), "{err}");
    assert!(!err.contains("unlink"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "at once");
    let out = sb.cmd().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "logged_out");
}

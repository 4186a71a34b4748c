//! The matrix's cases beyond the table: the logout paths, a flapping
//! server under the attempt bound, and a restart through Noise IK.

use super::*;

fn logout_settings() -> HostSettings {
    HostSettings {
        unlink_timeout: Duration::from_millis(500),
        ..fast_settings()
    }
}

/// What a finished logout left: the state, the row in the file, the
/// unlink IQs the server saw, the keys, the `on_logout` calls, and dials
/// after it (watched for `QUIET`, the one thing here that is a window).
async fn after_logout(rig: &Rig, server: &MockServer, unlink: bool) -> String {
    let reconnects = quiet_dials(server, QUIET).await;
    let on_logout = rig
        .settled_hook_calls(0)
        .await
        .iter()
        .filter(|c| c.starts_with("on_logout"))
        .count();
    let state = rig.handle.snapshot().state;
    let by = match &state {
        State::LoggedOut { by, .. } => by.as_str(),
        _ => "-",
    };
    let row = match rig.file_row() {
        Some(r) => format!("{}/{}", r.connection_status, r.state),
        None => "unreadable".into(),
    };
    let keys = match rig.app.store.session_exists(INSTANCE) {
        Ok(false) => "deleted",
        Ok(true) => "kept",
        Err(_) => "unreadable",
    };
    let unlinks = if unlink {
        format!(" unlink_iqs={}", server.unlinks().len())
    } else {
        String::new()
    };
    format!(
        "{} by={by} row={row}{unlinks} keys={keys} on_logout={on_logout} reconnects={reconnects}",
        state_word(&state),
    )
}

/// Pairs, lets `prepare` set the server up, logs out while open and
/// reports what the logout left.
async fn logout_when_open(prepare: impl FnOnce(&MockServer)) -> Result<String, String> {
    let server = MockServer::start().await;
    let rig = Rig::start_with(&server, logout_settings());
    rig.pair(&server).await;
    prepare(&server);
    rig.handle.logout(LogoutBy::User).await;
    let got = after_logout(&rig, &server, true).await;
    rig.stop().await;
    Ok(got)
}

pub async fn logout_while_open() -> Result<String, String> {
    logout_when_open(|_| {}).await
}

pub async fn logout_twice() -> Result<String, String> {
    let server = MockServer::start().await;
    let rig = Rig::start_with(&server, logout_settings());
    rig.pair(&server).await;
    let first = rig.handle.logout(LogoutBy::User).await;
    let second = rig.handle.logout(LogoutBy::User).await;
    let reconnects = quiet_dials(&server, QUIET).await;
    let on_logout = rig
        .settled_hook_calls(0)
        .await
        .iter()
        .filter(|c| c.starts_with("on_logout"))
        .count();
    let got = format!(
        "first={} second={} unlink_iqs={} on_logout={on_logout} reconnects={reconnects}",
        first.state.as_str(),
        second.state.as_str(),
        server.unlinks().len(),
    );
    rig.stop().await;
    Ok(got)
}

pub async fn logout_silent_server() -> Result<String, String> {
    logout_when_open(|server| server.go_silent(true)).await
}

pub async fn logout_while_connecting() -> Result<String, String> {
    let server = MockServer::start().await;
    let rig = Rig::start_with(&server, logout_settings());
    let open = rig.pair(&server).await;
    // The next login gets no `<success>`: the attempt hangs in connecting.
    server.go_silent(true);
    server.drop_tcp();
    rig.states
        .wait_for_within(WAIT, open + 1, "connecting", |s| {
            matches!(s, State::Connecting { .. })
        })
        .await?;
    server
        .wait_until(WAIT, "the silent login's handshake", |s| {
            s.handshakes() >= 3
        })
        .await;
    rig.handle.logout(LogoutBy::User).await;
    let got = after_logout(&rig, &server, false).await;
    rig.stop().await;
    Ok(got)
}

pub async fn logout_socket_killed() -> Result<String, String> {
    logout_when_open(|server| server.drop_on_unlink(true)).await
}

/// Flapping: every login is dropped 100 ms after it succeeds. Counts the
/// dials that reached the mock until the bound holds the next one back.
pub async fn flapping() -> Result<String, String> {
    const MAX: u32 = 6;
    let server = Arc::new(MockServer::start().await);
    let settings = HostSettings {
        reconnect: Settings {
            base_ms: 20,
            cap_ms: 400,
            max_per_minute: MAX,
            ..Settings::default()
        },
        ..HostSettings::default()
    };
    let rig = Rig::start_with(&server, settings);
    let started = Instant::now();
    let open = rig.pair(&server).await;
    let pairing_dials = dials(&server);
    let log = DialLog::watch(&server);
    let flap_start = Instant::now();
    server.flap(Some(Duration::from_millis(100)));
    server.drop_tcp();
    // Until a reconnect waits 30 s or more (the bound's doing: the cap is
    // 400 ms), or long enough for a host without the bound to show it.
    let waited = rig
        .states
        .wait_for_within(
            Duration::from_secs(10),
            open + 1,
            "a 30 s wait",
            |s| matches!(s, State::Reconnecting { delay_ms, .. } if *delay_ms >= 30_000),
        )
        .await;
    let flapping_dials = log.count_after(flap_start);
    // Every dial so far falls in one minute, so their number is what the
    // bound limits.
    let bound = if started.elapsed() >= Duration::from_secs(60) {
        "unmeasured"
    } else if pairing_dials + flapping_dials <= MAX as usize {
        "held"
    } else {
        "broken"
    };
    let delays: Vec<u64> = rig
        .states
        .since(open + 1)
        .iter()
        .filter_map(|s| match s {
            State::Reconnecting { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    // Full jitter makes single delays random; what must grow is the
    // ceiling, so compare the early ones with the later ones.
    let grew = match delays.as_slice() {
        [first, .., last] if last > first => "grew",
        _ => "flat",
    };
    let final_wait = match (waited, delays.last()) {
        (Ok(_), _) => ">=30s".to_string(),
        (Err(_), Some(d)) => format!("={d}ms"),
        (Err(_), None) => "=none".into(),
    };
    server.flap(None);
    rig.stop().await;
    Ok(format!(
        "dials={flapping_dials} after {pairing_dials} pairing dials bound={bound} delays={grew} final_wait{final_wait}"
    ))
}

pub async fn restart_uses_ik() -> Result<String, String> {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rig = Rig::start_in(&server, dir.path(), fast_settings());
    rig.pair(&server).await;
    rig.stop().await;
    let ik_before = server.ik_handshakes();
    let qr_before = server.qr_codes_sent().len();

    let rig = Rig::start_in(&server, dir.path(), fast_settings());
    let (_, open) = rig
        .states
        .wait_for_within(WAIT, 0, "open after the restart", |s| {
            matches!(s, State::Open { .. } | State::Pairing { .. })
        })
        .await?;
    let jid = match &open {
        State::Open { jid } => jid.clone().unwrap_or("-".into()),
        other => format!("({})", state_word(other)),
    };
    let got = format!(
        "{} jid={jid} ik={} new_qr={}",
        state_word(&open),
        server.ik_handshakes() - ik_before,
        server.qr_codes_sent().len() - qr_before,
    );
    rig.stop().await;
    Ok(got)
}

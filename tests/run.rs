//! `moonwire run`: configured instances, the API, and a clean stop on SIGTERM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::Sandbox;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn run_serves_the_api_and_stops_cleanly_on_sigterm() {
    let sb = Sandbox::new();
    let port = free_port();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        format!(
            "[[instance]]\nname = \"bot\"\nchannel = \"console\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\nkey = \"k\"\n"
        ),
    )
    .unwrap();
    let child = sb
        .cmd()
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
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

#[test]
fn run_refuses_what_it_cannot_do_yet_and_says_why() {
    let sb = Sandbox::new();
    // The default config is one WhatsApp instance.
    let out = sb.cmd().arg("run").stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("instance \"default\"") && err.contains("whatsapp"),
        "{err}"
    );
    // A public API address needs an explicit key.
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[[instance]]\nname = \"c\"\nchannel = \"console\"\n[api]\nlisten = \"0.0.0.0:0\"\n",
    )
    .unwrap();
    let out = sb.cmd().arg("run").stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}

//! The command line itself: what each command's help offers, and a scripts
//! folder that is not there.

mod common;

use std::process::Stdio;

use common::Sandbox;

/// The `--flags` a command's help lists.
fn flags(sub: &str) -> Vec<String> {
    let out = common::command(std::env::temp_dir().as_path())
        .args([sub, "--help"])
        .output()
        .expect("help");
    assert!(out.status.success(), "{sub} --help");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut flags: Vec<String> = text
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches([',', '.']).to_string())
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[test]
fn each_command_lists_only_the_flags_that_apply_to_it() {
    assert_eq!(flags("check"), ["--config", "--help", "--log"]);
    assert_eq!(
        flags("status"),
        ["--config", "--data-dir", "--help", "--json"]
    );
    assert_eq!(
        flags("logout"),
        ["--config", "--data-dir", "--help", "--instance", "--log"]
    );
    let console = flags("console");
    for f in [
        "--manual-scan",
        "--scripts",
        "--reconnect-base-ms",
        "--data-dir",
    ] {
        assert!(console.contains(&f.to_string()), "console: {console:?}");
    }
    let run = flags("run");
    assert!(!run.contains(&"--manual-scan".to_string()), "{run:?}");
    // A flag a command does not take is refused, not silently ignored.
    let out = common::command(std::env::temp_dir().as_path())
        .args(["status", "--reconnect-base-ms", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_scripts_folder_that_does_not_exist_is_an_error() {
    let sb = Sandbox::new();
    let typo = sb.path().join("scirpts");
    let out = common::command(sb.path())
        .args(["console", "--scripts"])
        .arg(&typo)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--scripts") && err.contains("scirpts") && err.contains("no such folder"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing started");
    assert!(!sb.path().join("data").exists(), "no database touched");
    let out = common::command(sb.path())
        .env("MOONWIRE_SCRIPTS", &typo)
        .arg("run")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MOONWIRE_SCRIPTS"));
    // The default folder missing is fine: the console runs without scripts.
    let bare = tempfile::tempdir().unwrap();
    let out = common::run_console(common::command(bare.path()), "");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

//! The mock server driven by JSON lines, one command per line and one
//! answer line each (`{"ok": true, …}` or `{"ok": false, "error": "…"}`):
//! what `examples/mock_server.rs` reads from stdin, so a client written in
//! another language (Baileys, `tests/peer/`) can be tested against the same
//! server the Rust tests use in-process. A line that is not a command gets
//! an error answer; nothing a line says can stop the server.
//!
//! Commands (`cmd`, then its fields):
//! - `scan {qr, account?}`: the phone of account `account` (0) scans `qr`
//!   → `sent` (connections that got `<pair-success>`);
//! - `message_from {contact, push_name?, text, account?}` → `id`;
//! - `deliver_to {contact}` → `texts` (what companions sent the contact
//!   since the last call, decrypted) and `undecryptable` (why each of the
//!   others could not be);
//! - `burst {pairs: [[account, contact], …], count, text}`: each contact
//!   writes `count` messages (`text` and a number) to its account,
//!   interleaved → `sent`;
//! - faults, each → `connections` (how many got it): `stream_error
//!   {code}`, `replace`, `failure {reason, expire?}`, `end_stream`,
//!   `drop_tcp`; switches, each → `{}`: `silent {on}`, `refuse {on}`,
//!   `accept_next {n}` (null lifts the limit), `fail_logins {reason}`
//!   (null stops), `flap {after_ms}` (null stops), `drop_on_unlink {on}`;
//! - `wait {cond, n?, timeout_ms?}`: until counter `cond` reaches `n` (1)
//!   → `value`; an error (with `value`) on timeout;
//! - `counters` → every counter; `account {k}` → `pn`, `lid`;
//! - `received {tag?}` → `stanzas` (each `{tag, attrs, content}`);
//! - `errors` → `errors`.

use std::time::Duration;

use serde_json::{Value, json};
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::node::NodeContent;

use super::contact::text_of;
use super::{Failure, MockServer};

/// The counters `wait` and `counters` know.
pub const COUNTERS: &[&str] = &[
    "connections",
    "handshakes",
    "ik_handshakes",
    "logins",
    "open_logins",
    "refused",
    "refs",
    "pair_signs",
    "bundles",
    "messages_to_contacts",
    "received",
    "unlinks",
    "errors",
];

/// The longest `wait` a command may ask for.
const MAX_WAIT: Duration = Duration::from_secs(600);

fn counter(server: &MockServer, name: &str) -> Option<usize> {
    Some(match name {
        "connections" => server.connections(),
        "handshakes" => server.handshakes(),
        "ik_handshakes" => server.ik_handshakes(),
        "logins" => server.logins(),
        "open_logins" => server.open_logins(),
        "refused" => server.refused(),
        "refs" => server.qr_codes_sent().len(),
        "pair_signs" => server.pair_signs().len(),
        "bundles" => server.bundles(),
        "messages_to_contacts" => server.messages_to_contacts(),
        "received" => server.shared.received.lock().unwrap().len(),
        "unlinks" => server.unlinks().len(),
        "errors" => server.shared.errors.lock().unwrap().len(),
        _ => return None,
    })
}

/// A node as JSON: `{tag, attrs, content}` with content a list of nodes,
/// `{"bytes": n}` or `{"text": s}`.
pub fn node_json(node: &Node) -> Value {
    let attrs: serde_json::Map<String, Value> = node
        .attrs
        .0
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let content = match &node.content {
        None => Value::Null,
        Some(NodeContent::Nodes(children)) => children.iter().map(node_json).collect(),
        Some(NodeContent::Bytes(b)) => json!({ "bytes": b.len() }),
        Some(NodeContent::String(s)) => json!({ "text": s.to_string() }),
    };
    json!({ "tag": node.tag.to_string(), "attrs": attrs, "content": content })
}

fn field<'a>(cmd: &'a Value, key: &str) -> Result<&'a Value, String> {
    cmd.get(key).ok_or_else(|| format!("missing field {key:?}"))
}

fn string(cmd: &Value, key: &str) -> Result<String, String> {
    field(cmd, key)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("field {key:?} is not a string"))
}

fn number(cmd: &Value, key: &str) -> Result<u64, String> {
    field(cmd, key)?
        .as_u64()
        .ok_or_else(|| format!("field {key:?} is not a non-negative integer"))
}

/// An optional number: absent or null is `None`.
fn maybe_number(cmd: &Value, key: &str) -> Result<Option<u64>, String> {
    match cmd.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => number(cmd, key).map(Some),
    }
}

fn flag(cmd: &Value, key: &str) -> Result<bool, String> {
    match cmd.get(key) {
        None => Ok(true),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("field {key:?} is not a boolean")),
    }
}

fn account(cmd: &Value) -> Result<usize, String> {
    let k = maybe_number(cmd, "account")?.unwrap_or(0);
    usize::try_from(k)
        .ok()
        .filter(|&k| k < 100_000)
        .ok_or_else(|| format!("account {k} is out of range"))
}

fn code(cmd: &Value, key: &str) -> Result<u16, String> {
    u16::try_from(number(cmd, key)?).map_err(|_| format!("field {key:?} is not a status code"))
}

/// Runs one command line; answers the line to print.
pub async fn run_line(server: &MockServer, line: &str) -> String {
    let answer = match serde_json::from_str::<Value>(line) {
        Err(e) => Err(format!("not JSON: {e}")),
        Ok(cmd) => run(server, &cmd).await,
    };
    match answer {
        Ok(Value::Object(mut map)) => {
            map.insert("ok".into(), Value::Bool(true));
            Value::Object(map).to_string()
        }
        Ok(other) => json!({ "ok": true, "value": other }).to_string(),
        Err(e) => json!({ "ok": false, "error": e }).to_string(),
    }
}

async fn run(server: &MockServer, cmd: &Value) -> Result<Value, String> {
    let name = string(cmd, "cmd")?;
    let connections = |n: usize| Ok(json!({ "connections": n }));
    match name.as_str() {
        "scan" => {
            let sent = server
                .scan_as(&string(cmd, "qr")?, account(cmd)?)
                .map_err(|e| format!("{e:#}"))?;
            Ok(json!({ "sent": sent }))
        }
        "message_from" => {
            let push_name = match cmd.get("push_name") {
                None | Some(Value::Null) => String::new(),
                Some(_) => string(cmd, "push_name")?,
            };
            let id = server
                .message_to(
                    account(cmd)?,
                    &string(cmd, "contact")?,
                    &push_name,
                    &string(cmd, "text")?,
                )
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(json!({ "id": id }))
        }
        "deliver_to" => {
            let contact = string(cmd, "contact")?;
            if contact.is_empty() || !contact.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("a contact is a phone number, not {contact:?}"));
            }
            let (read, failed) = server.deliver(&contact).await;
            let texts: Vec<Value> = read
                .iter()
                .map(|m| text_of(m).map_or(Value::Null, Value::String))
                .collect();
            Ok(json!({ "texts": texts, "undecryptable": failed }))
        }
        "burst" => burst(server, cmd).await,
        "stream_error" => connections(server.close_with_stream_error(code(cmd, "code")?)),
        "replace" => connections(server.replace_session()),
        "failure" => connections(server.send_failure(Failure {
            reason: code(cmd, "reason")?,
            expire: maybe_number(cmd, "expire")?,
        })),
        "end_stream" => connections(server.end_stream()),
        "drop_tcp" => connections(server.drop_tcp()),
        "silent" => {
            server.go_silent(flag(cmd, "on")?);
            Ok(json!({}))
        }
        "refuse" => {
            server.refuse_connections(flag(cmd, "on")?);
            Ok(json!({}))
        }
        "accept_next" => {
            let n = maybe_number(cmd, "n")?.map(|n| n as usize);
            server.accept_next(n);
            Ok(json!({}))
        }
        "fail_logins" => {
            let failure = match maybe_number(cmd, "reason")? {
                None => None,
                Some(_) => Some(Failure {
                    reason: code(cmd, "reason")?,
                    expire: maybe_number(cmd, "expire")?,
                }),
            };
            server.fail_logins(failure);
            Ok(json!({}))
        }
        "flap" => {
            server.flap(maybe_number(cmd, "after_ms")?.map(Duration::from_millis));
            Ok(json!({}))
        }
        "drop_on_unlink" => {
            server.drop_on_unlink(flag(cmd, "on")?);
            Ok(json!({}))
        }
        "wait" => {
            let cond = string(cmd, "cond")?;
            if counter(server, &cond).is_none() {
                return Err(format!("unknown cond {cond:?}; one of {COUNTERS:?}"));
            }
            let n = maybe_number(cmd, "n")?.unwrap_or(1) as usize;
            let timeout = maybe_number(cmd, "timeout_ms")?
                .map(Duration::from_millis)
                .unwrap_or(Duration::from_secs(5))
                .min(MAX_WAIT);
            let reached = server
                .wait_for(timeout, |s| counter(s, &cond).unwrap_or(0) >= n)
                .await;
            let value = counter(server, &cond).unwrap_or(0);
            if reached {
                Ok(json!({ "value": value }))
            } else {
                Err(format!(
                    "timed out after {} ms: {cond} is {value}, not {n}",
                    timeout.as_millis()
                ))
            }
        }
        "counters" => Ok(COUNTERS
            .iter()
            .map(|c| (c.to_string(), json!(counter(server, c).unwrap_or(0))))
            .collect::<serde_json::Map<_, _>>()
            .into()),
        "account" => {
            let k = usize::try_from(number(cmd, "k")?)
                .ok()
                .filter(|&k| k < 100_000)
                .ok_or("account out of range")?;
            let (pn, lid) = server.account(k);
            Ok(json!({ "pn": pn, "lid": lid }))
        }
        "received" => {
            let tag = match cmd.get("tag") {
                None | Some(Value::Null) => None,
                Some(_) => Some(string(cmd, "tag")?),
            };
            let stanzas: Vec<Value> = server
                .received()
                .iter()
                .filter(|n| tag.as_deref().is_none_or(|t| n.tag == t))
                .map(node_json)
                .collect();
            Ok(json!({ "stanzas": stanzas }))
        }
        "errors" => Ok(json!({ "errors": server.errors() })),
        other => Err(format!("unknown command {other:?}")),
    }
}

/// Each `[account, contact]` pair's contact writes `count` messages to the
/// account, round-robin over the pairs.
async fn burst(server: &MockServer, cmd: &Value) -> Result<Value, String> {
    let count = number(cmd, "count")?.min(100_000);
    let text = string(cmd, "text")?;
    let pairs: Vec<(usize, String)> = field(cmd, "pairs")?
        .as_array()
        .ok_or("field \"pairs\" is not a list")?
        .iter()
        .map(|p| {
            match (
                p.get(0).and_then(Value::as_u64),
                p.get(1).and_then(Value::as_str),
            ) {
                (Some(k), Some(c)) if k < 100_000 => Ok((k as usize, c.to_string())),
                _ => Err(format!("a pair is [account, contact], not {p}")),
            }
        })
        .collect::<Result<_, _>>()?;
    let mut sent = 0;
    for i in 0..count {
        for (k, contact) in &pairs {
            server
                .message_to(*k, contact, "", &format!("{text} {i}"))
                .await
                .map_err(|e| format!("after {sent} sent: {e:#}"))?;
            sent += 1;
        }
    }
    Ok(json!({ "sent": sent }))
}

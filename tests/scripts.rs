//! Scripts through the real binary: every hook, every `bot` function, the
//! limits, the sandbox and hot reload.

mod common;

use std::time::Duration;

use common::Sandbox;

const OPEN: [&str; 2] = ["* connecting attempt=1", "* open jid=me@console"];
const SECS: Duration = Duration::from_secs(10);

#[test]
fn on_message_sees_every_field_and_replies_and_reacts() {
    let sb = Sandbox::new();
    sb.script(
        "echo.lua",
        r#"
function on_message(m)
  if m.text == "fields" then
    m:reply(string.format("%s|%s|%s|%s|%s|%s|%s|%s", m.chat, m.sender, m.text, m.type,
      tostring(m.from_me), tostring(m.is_group), m.push_name, math.type(m.timestamp)))
  elseif m.text == "react" then
    m:react("👍")
  elseif m.text == "ids" then
    local id = m:reply("one")
    local id2 = bot.send("friend@console", "two")
    m:reply(tostring(#id > 4 and id ~= id2))
  end
end
"#,
    );
    let out = sb.console("fields\nreact\nids\n");
    assert_eq!(out.stdout[..2], OPEN);
    out.assert_bot_lines(&[
        "bot> you@console|you@console|fields|text|false|false|you|integer",
        "bot reacted 👍",
        "bot> one",
        "bot> [friend@console] two",
        "bot> true",
    ]);
}

#[test]
fn lifecycle_hooks_fire_with_their_arguments() {
    let sb = Sandbox::new();
    sb.script(
        "hooks.lua",
        r#"
local loaded = false
function on_load() loaded = true end
function on_open(s)
  bot.send("you@console", "open " .. s.instance .. " " .. tostring(s.jid) .. " " .. tostring(s.push_name) .. " " .. tostring(loaded) .. " " .. bot.state())
end
function on_qr(p) bot.log.warn("QR", p.code, p.kind, p.expires_in) end
function on_close(r)
  bot.log.warn("CLOSE", r.code, r.kind, r.message, r.attempt, r.will_reconnect, r.delay_ms)
end
function on_logout(i) bot.log.warn("LOGOUT", i.code, i.kind, i.by) end
function on_unload() bot.log.warn("UNLOADED") end
"#,
    );
    let out = sb.console("/drop 440\n/logout\n/connect\n/connect\n");
    out.assert_bot_lines(&[
        "bot> open console me@console moonwire true open",
        "bot> open console me@console moonwire true open",
    ]);
    let e = &out.stderr;
    assert!(
        e.contains("CLOSE 440 replaced console: dropped with 440 1 false nil"),
        "{e}"
    );
    // /logout while closed is noticed at the next login: a 401.
    assert!(e.contains("CLOSE 401 logged_out"), "{e}");
    assert!(e.contains("LOGOUT 401 logged_out server"), "{e}");
    assert!(e.contains("QR 2@console-1 qr 60"), "{e}");
    assert!(e.contains("UNLOADED"), "{e}");
}

/// With a script answering `ret`, the first `n` state lines after `line`
/// (a `/drop`), each waited for: an answer still on its way at end of
/// input would be settled as "stay" by the stop and look like `false`.
fn close_answer(ret: &str, line: &str, n: usize) -> Vec<String> {
    let sb = Sandbox::new();
    sb.script(
        "policy.lua",
        &format!("function on_close(r) return {ret} end\n"),
    );
    state_lines_after(&sb, line, n)
}

fn state_lines_after(sb: &Sandbox, line: &str, n: usize) -> Vec<String> {
    let mut s = sb.session();
    s.expect("* open jid=me@console", SECS);
    s.send(line);
    let got = (0..n).map(|_| s.expect_starting("* ", SECS)).collect();
    s.finish();
    got
}

#[test]
fn on_close_answers_change_what_a_drop_does_and_say_so() {
    let first = |ret: &str| close_answer(ret, "/drop 408", 1).remove(0);
    let nil = first("nil");
    assert!(
        nil.starts_with("* reconnecting code=408 kind=connection_lost attempt=1 delay_ms="),
        "{nil}"
    );
    assert!(
        !nil.ends_with("by=script"),
        "nil leaves it to the table: {nil}"
    );
    assert_eq!(
        first("false"),
        "* closed code=408 kind=connection_lost by=script"
    );
    let yes = first("true");
    assert!(
        yes.starts_with("* reconnecting code=408") && yes.ends_with(" by=script"),
        "{yes}"
    );
    assert_eq!(
        first("25"),
        "* reconnecting code=408 kind=connection_lost attempt=1 delay_ms=25 by=script"
    );
    assert_eq!(
        first("{delay_ms = 30}"),
        "* reconnecting code=408 kind=connection_lost attempt=1 delay_ms=30 by=script"
    );
    assert_eq!(
        first("{reconnect = false}"),
        "* closed code=408 kind=connection_lost by=script"
    );
    // 440 stays closed by default; a script may bring it back.
    assert_eq!(
        close_answer("nil", "/drop 440", 1),
        ["* closed code=440 kind=replaced"]
    );
    assert_eq!(
        close_answer("5", "/drop 440", 3),
        [
            "* reconnecting code=440 kind=replaced attempt=1 delay_ms=5 by=script",
            "* connecting attempt=1",
            "* open jid=me@console"
        ]
    );
}

#[test]
fn on_close_cannot_override_logout_or_restart() {
    for ret in ["true", "false", "0", "{reconnect=true, delay_ms=1}"] {
        assert_eq!(
            close_answer(ret, "/drop 401", 1),
            ["* logged_out code=401 kind=logged_out by=server"],
            "{ret}"
        );
        assert_eq!(
            close_answer(ret, "/drop 515", 2),
            ["* connecting attempt=1", "* open jid=me@console"],
            "{ret}"
        );
        assert_eq!(
            close_answer(ret, "/drop 405", 1),
            ["* closed code=405 kind=client_outdated"],
            "{ret}"
        );
    }
}

#[test]
fn the_first_script_with_an_answer_decides() {
    let sb = Sandbox::new();
    sb.script("a.lua", "function on_close(r) return nil end\n");
    sb.script("b.lua", "function on_close(r) return false end\n");
    sb.script("c.lua", "function on_close(r) return 5 end\n");
    assert_eq!(
        state_lines_after(&sb, "/drop 408", 1),
        ["* closed code=408 kind=connection_lost by=script"]
    );
    // A bad answer is reported and skipped.
    let sb = Sandbox::new();
    sb.script("a.lua", "function on_close(r) return 'soon' end\n");
    sb.script("b.lua", "function on_close(r) return false end\n");
    let mut s = sb.session();
    s.expect("* open jid=me@console", SECS);
    let line = s.step("/drop 408", "* ");
    assert_eq!(line, "* closed code=408 kind=connection_lost by=script");
    let (_, stderr) = s.finish();
    assert!(stderr.contains("on_close returned a string"), "{stderr}");
}

#[test]
fn commands_hears_and_state() {
    let sb = Sandbox::new();
    sb.script(
        "cmds.lua",
        r#"
bot.command("echo", function(m, args)
  m:reply(#args .. ":" .. table.concat(args, ",") .. ":" .. args.text)
end, "repeat after me")
bot.command("state", function(m) m:reply(bot.state() .. " " .. bot.instance) end)
bot.command("list", function(m)
  local names = {}
  for _, c in ipairs(bot.commands()) do names[#names + 1] = c.name .. "=" .. tostring(c.description) end
  m:reply(table.concat(names, " "))
end)
bot.hear("^weather in (%a+) on (%a+)$", function(m, city, day) m:reply(city .. "/" .. day) end)
bot.hear("hello", function(m, whole) m:reply("heard " .. whole) end)
"#,
    );
    let out = sb.console("!echo a  b c\n!echo\n!state\n!list\n!nope\nweather in Lisbon on Friday\nwell hello there\n");
    out.assert_bot_lines(&[
        "bot> 3:a,b,c:a  b c",
        "bot> 0::",
        "bot> open console",
        "bot> echo=repeat after me list=nil state=nil",
        "bot> Lisbon/Friday",
        "bot> heard hello",
    ]);
}

#[test]
fn the_command_prefix_is_configurable() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[script]\ncommand_prefix = \".\"\n",
    )
    .unwrap();
    sb.script(
        "p.lua",
        "bot.command('ping', function(m) m:reply('pong') end)\n",
    );
    let out = sb.console("!ping\n.ping\n");
    out.assert_bot_lines(&["bot> pong"]);
}

#[test]
fn store_survives_reload_and_restart_and_is_per_script() {
    let sb = Sandbox::new();
    sb.script(
        "a.lua",
        r#"
bot.command("set", function(m, args) bot.store.set(args[1], {n = tonumber(args[2]), list = {1, 2, 3}, s = "x"}) m:reply("ok") end)
bot.command("get", function(m, args)
  local v = bot.store.get(args[1])
  if v == nil then m:reply("nil") else m:reply(math.floor(v.n) .. " " .. #v.list .. " " .. v.s) end
end)
bot.command("del", function(m, args) bot.store.delete(args[1]) m:reply("deleted") end)
bot.command("bad", function(m) bot.store.set("f", function() end) end)
"#,
    );
    sb.script(
        "b.lua",
        r#"bot.command("peek", function(m, args) m:reply(tostring(bot.store.get(args[1]))) end)"#,
    );
    let out = sb.console("!set k 42\n!get k\n!peek k\n!bad\n");
    out.assert_bot_lines(&["bot> ok", "bot> 42 3 x", "bot> nil"]);
    assert!(
        out.stderr.contains(
            "a.lua:8: bot.store.set(\"f\"): the value is a function, which cannot be stored"
        ),
        "{}",
        out.stderr
    );
    let out = sb.console("!get k\n!del k\n!get k\n");
    out.assert_bot_lines(&["bot> 42 3 x", "bot> deleted", "bot> nil"]);
}

#[test]
fn timers_fire_repeat_and_cancel() {
    let sb = Sandbox::new();
    sb.script(
        "t.lua",
        r#"
bot.command("later", function(m) bot.after(30, function() bot.send(m.chat, "later") end) m:reply("scheduled") end)
bot.command("tick", function(m)
  local n = 0
  local h
  h = bot.every(20, function()
    n = n + 1
    bot.send(m.chat, "tick " .. n)
    if n == 3 then h:cancel() end
  end)
end)
bot.command("never", function(m)
  local h = bot.after(20, function() bot.send(m.chat, "should not fire") end)
  m:reply(tostring(h:cancel()) .. " " .. tostring(h:cancel()))
end)
"#,
    );
    let mut s = sb.session();
    s.expect("* open jid=me@console", SECS);
    s.step("!later", "bot> scheduled");
    s.expect("bot> later", SECS);
    s.send("!tick");
    s.expect("bot> tick 3", SECS);
    s.step("!never", "bot> true false");
    // A 30 ms timer set now fires after anything the cancelled ones (20 ms
    // each, set earlier) could still have sent: once it is here, they
    // would have been too.
    s.step("!later", "bot> scheduled");
    s.expect("bot> later", SECS);
    let out = s.output();
    out.assert_bot_lines(&[
        "bot> scheduled",
        "bot> later",
        "bot> tick 1",
        "bot> tick 2",
        "bot> tick 3",
        "bot> true false",
        "bot> scheduled",
        "bot> later",
    ]);
}

#[test]
fn bot_logout_tears_down_by_script() {
    let sb = Sandbox::new();
    sb.script(
        "bye.lua",
        r#"
bot.command("bye", function(m) m:reply("bye") bot.logout() end)
function on_logout(i) bot.log.warn("LOGOUT", i.code, i.kind, i.by) end
"#,
    );
    let out = sb.console("!bye\n");
    assert_eq!(
        out.stdout,
        [
            "* connecting attempt=1",
            "* open jid=me@console",
            "bot> bye",
            "* logging_out by=script",
            "* logged_out code=401 kind=logged_out by=script",
        ],
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("LOGOUT 401 logged_out script"));
    let row = sb.cmd().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&row.stdout).unwrap();
    assert_eq!(v[0]["state"], "logged_out");
}

#[test]
fn sending_while_not_open_says_so() {
    let sb = Sandbox::new();
    sb.script(
        "s.lua",
        r#"
function on_close(r)
  local id, err = bot.send("you@console", "x")
  bot.log.warn("SEND", tostring(id), err, bot.state())
  return false
end
"#,
    );
    let out = sb.console("/drop 408\n");
    assert!(
        out.stderr.contains("SEND nil not open closed"),
        "{}",
        out.stderr
    );
}

/// While reconnecting a send gets its id at once and waits in the outbox;
/// it goes out once the connection is open again.
#[test]
fn a_send_while_reconnecting_waits_in_the_outbox_and_goes_out_after_the_open() {
    let sb = Sandbox::new();
    sb.script(
        "s.lua",
        r#"
function on_close(r)
  bot.after(20, function()
    local id, err = bot.send("you@console", "queued while away")
    bot.log.warn("SEND", tostring(id ~= nil), tostring(err), bot.state())
  end)
  return 500
end
"#,
    );
    let mut s = sb.session();
    s.expect("* open jid=me@console", common::LINE_WAIT);
    s.send("/drop 428");
    let before = s.expect("bot> queued while away", common::LINE_WAIT);
    let reopened = before
        .iter()
        .position(|l| l.starts_with("* reconnecting"))
        .and_then(|r| before[r..].iter().position(|l| l.starts_with("* open")));
    assert!(reopened.is_some(), "sent after the open: {before:?}");
    let (_, stderr) = s.finish();
    assert!(stderr.contains("SEND true nil reconnecting"), "{stderr}");
}

/// A message's `bot.store` writes are committed with its handled mark at
/// the end of the engine's batch; a write made outside a message's start
/// before then (a timer due at once) still lands after them.
#[test]
fn a_write_after_a_messages_write_lands_after_it() {
    let sb = Sandbox::new();
    sb.script(
        "s.lua",
        r#"
function on_message(m)
  bot.store.set("last", "message " .. m.text)
  bot.after(0, function()
    bot.store.set("last", "timer after " .. m.text)
    bot.send(m.chat, "read " .. tostring(bot.store.get("last")))
  end)
end
"#,
    );
    let mut s = sb.session();
    s.expect("* open jid=me@console", common::LINE_WAIT);
    s.send("1");
    s.expect("bot> read timer after 1", common::LINE_WAIT);
    let (_, stderr) = s.finish();
    let store = moonwire::store::Store::open(&sb.path().join("data/moonwire.db")).unwrap();
    assert_eq!(
        store.kv_get("console", "s", "last").unwrap(),
        Some(serde_json::json!("timer after 1")),
        "{stderr}"
    );
}

#[test]
fn a_runaway_hook_is_stopped_and_the_bot_goes_on() {
    let sb = Sandbox::new();
    sb.script(
        "bad.lua",
        r#"
bot.command("loop", function(m)
  while true do end
end)
bot.command("pcallloop", function(m)
  while true do pcall(function() while true do end end) end
end)
bot.command("co", function(m)
  local co = coroutine.create(function() while true do end end)
  coroutine.resume(co)
  m:reply("co returned")  -- never: an overrun cannot be caught
end)
bot.command("bomb", function(m)
  local t = {}
  for i = 1, 1e9 do t[i] = string.rep("x", 1 << 20) .. i end
end)
bot.command("err", function(m) local x = nil; return x.field end)
bot.command("ping", function(m) m:reply("pong") end)
"#,
    );
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[script]\nhook_timeout_ms = 200\nmemory_limit_mb = 16\n",
    )
    .unwrap();
    let out = sb.console(
        "!loop\n!ping\n!pcallloop\n!ping\n!co\n!ping\n!bomb\n!ping\n!err\n!ping\n/drop 408\n",
    );
    assert_eq!(out.code, Some(0));
    out.assert_bot_lines(&[
        "bot> pong",
        "bot> pong",
        "bot> pong",
        "bot> pong",
        "bot> pong",
    ]);
    let e = &out.stderr;
    assert!(
        e.contains("bad.lua:3: script exceeded its time budget of 200 ms"),
        "{e}"
    );
    assert!(
        e.contains("bad.lua:6: script exceeded its time budget"),
        "{e}"
    );
    // The coroutine's overrun ends the command: once, at the loop's line.
    assert!(
        e.contains("bad.lua:9: script exceeded its time budget"),
        "{e}"
    );
    assert!(!e.contains("bad.lua:9: bad.lua:9:"), "{e}");
    // Out of memory is located too.
    assert!(e.contains("bad.lua:15: out of memory"), "{e}");
    assert!(
        e.contains("bad.lua:17: attempt to index a nil value"),
        "{e}"
    );
    // The connection was untouched: the drop afterwards behaves as usual
    // (the reconnect may or may not happen before the input ends).
    let states: Vec<&String> = out.stdout.iter().filter(|l| l.starts_with("* ")).collect();
    assert_eq!(states[..2], OPEN);
    assert!(
        states[2].starts_with("* reconnecting code=408"),
        "{states:?}"
    );
}

#[test]
fn errors_in_every_hook_are_reported_and_the_others_run() {
    let sb = Sandbox::new();
    sb.script(
        "a_broken.lua",
        r#"
function on_open(s) error("open failed") end
function on_message(m) error("message failed") end
function on_close(r) error("close failed") end
function on_logout(i) error("logout failed") end
function on_qr(p) error("qr failed") end
function on_unload() error("unload failed") end
"#,
    );
    sb.script(
        "b_good.lua",
        "function on_message(m) m:reply('still here') end\n",
    );
    sb.script("c_noload.lua", "function on_load() error('nope') end\nfunction on_message(m) m:reply('should not run') end\n");
    let mut s = sb.session();
    s.expect("* open jid=me@console", SECS);
    s.step("hi", "bot> still here");
    s.step("/drop 408", "* reconnecting");
    s.expect("* open jid=me@console", SECS);
    s.step("/logout", "* logged_out");
    s.step("/connect", "* open jid=me@console");
    s.step("hi", "bot> still here");
    let out = s.output();
    out.assert_bot_lines(&["bot> still here", "bot> still here"]);
    for (line, what) in [
        (2, "open failed"),
        (3, "message failed"),
        (4, "close failed"),
        (5, "logout failed"),
        (6, "qr failed"),
        (7, "unload failed"),
    ] {
        assert!(
            out.stderr.contains(&format!("a_broken.lua:{line}: {what}")),
            "{what}\n{}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("c_noload.lua:1: nope"));
    // The state lines are those of a host without scripts.
    assert!(
        out.stdout
            .contains(&"* logged_out code=401 kind=logged_out by=server".to_string())
    );
}

#[test]
fn the_sandbox_holds() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.scripts().join("lib")).unwrap();
    std::fs::write(
        sb.scripts().join("lib").join("util.lua"),
        "return { twice = function(x) return x * 2 end }\n",
    )
    .unwrap();
    std::fs::write(
        sb.scripts().join("lib").join("loop.lua"),
        "bot.log.warn('lib is not a script')\n",
    )
    .unwrap();
    sb.script(
        "s.lua",
        r#"
local util = require("lib.util")
bot.command("probe", function(m)
  local r = {}
  for _, name in ipairs({"io", "debug", "load", "loadfile", "dofile", "package", "collectgarbage"}) do
    r[#r + 1] = name .. "=" .. type(_G[name])
  end
  r[#r + 1] = "os.execute=" .. type(os.execute)
  r[#r + 1] = "os.time=" .. type(os.time)
  r[#r + 1] = "dump=" .. type(string.dump)
  r[#r + 1] = "twice=" .. util.twice(21)
  r[#r + 1] = "same=" .. tostring(require("lib.util") == util)
  r[#r + 1] = "strmeta=" .. tostring(getmetatable(""))
  m:reply(table.concat(r, " "))
end)
bot.command("escape", function(m) require("../../etc/passwd") end)
"#,
    );
    let out = sb.console("!probe\n!escape\n");
    out.assert_bot_lines(&[
            "bot> io=nil debug=nil load=nil loadfile=nil dofile=nil package=nil collectgarbage=nil os.execute=nil os.time=function dump=nil twice=42 same=true strmeta=false"
    ]);
    assert!(
        out.stderr
            .contains("s.lua:16: require \"../../etc/passwd\": not a module name"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("lib is not a script"));
}

#[test]
fn bytecode_is_refused() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.scripts().join("b.lua"),
        b"\x1bLuaT\x00\x19\x93\r\n\x1a\n",
    )
    .unwrap();
    let out = sb.cmd().args(["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("b.lua") && text.contains("binary"), "{text}");
}

#[test]
fn check_reports_path_and_line() {
    let sb = Sandbox::new();
    sb.script(
        "good.lua",
        "bot.command('x', function(m) end)\nfunction on_load() bot.store.set('a', 1) end\n",
    );
    let out = sb.cmd().arg("check").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    sb.script("bad.lua", "local x = 1\nfunction f(\n");
    sb.script(
        "worse.lua",
        "function on_load()\n  bot.hear('[', function() end)\nend\n",
    );
    let out = sb.cmd().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("bad.lua:3:"), "{text}");
    assert!(
        lines[1].contains("worse.lua:2: bot.hear: bad pattern"),
        "{text}"
    );
    let out = sb.cmd().args(["check", "missing.lua"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn shipped_scripts_and_examples_check_clean() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(common::bin())
        .current_dir(root)
        .env_remove("MOONWIRE_CONFIG")
        .args([
            "check",
            "scripts",
            "examples/office-hours",
            "examples/reminders",
            "examples/moderation",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_default_script_answers_ping_and_help() {
    let sb = Sandbox::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = sb.console_with("!ping\n!help\n", |c| {
        c.env("MOONWIRE_SCRIPTS", root.join("scripts"));
    });
    let lines = out.bot_lines();
    assert_eq!(lines[0], "bot> pong", "{}", out.stderr);
    assert!(lines.iter().any(|l| l.contains("!ping")) && lines.iter().any(|l| l.contains("!help")));
}

#[test]
fn reload_swaps_code_keeps_old_on_error_and_never_refires_on_open() {
    let sb = Sandbox::new();
    sb.script(
        "v.lua",
        "function on_open() bot.send('you@console', 'opened') end\nbot.command('ver', function(m) m:reply('v1') end)\n",
    );
    let mut s = sb.session();
    s.expect("bot> opened", SECS);
    s.send("!ver");
    s.expect("bot> v1", SECS);
    sb.script(
        "v.lua",
        "function on_open() bot.send('you@console', 'opened') end\nbot.command('ver', function(m) m:reply('v2') end)\n",
    );
    wait_for_answer(&mut s, "!ver", "bot> v2");
    // A syntax error: the old generation keeps answering, the error names file:line.
    sb.script(
        "v.lua",
        "bot.command('ver', function(m)\n  m:reply('v3'\nend)\n",
    );
    let deadline = std::time::Instant::now() + SECS;
    while !s.stderr().contains("v.lua:3:") {
        assert!(
            std::time::Instant::now() < deadline,
            "no error reported:\n{}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s.send("!ver");
    s.expect("bot> v2", SECS);
    let (rest, _) = s.finish();
    assert!(rest.is_empty(), "{rest:?}");
}

/// Asks until the answer comes (a reload is asynchronous).
fn wait_for_answer(s: &mut common::Session, ask: &str, want: &str) {
    let deadline = std::time::Instant::now() + SECS;
    loop {
        s.send(ask);
        let got = s.drain(Duration::from_millis(150));
        if got.iter().any(|l| l == want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never got {want:?}; stderr:\n{}",
            s.stderr()
        );
    }
}

#[test]
fn rapid_rewrites_reload_a_few_times_and_leak_no_timers() {
    let sb = Sandbox::new();
    let version = |n: usize| {
        format!(
            "bot.every(25, function() bot.send('you@console', 'tick v{n}') end)\nbot.command('ver', function(m) m:reply('v{n}') end)\n"
        )
    };
    sb.script("t.lua", &version(0));
    // The console logs warnings only by default; the loads are info.
    let mut s = sb.session_with(|c| {
        c.env("MOONWIRE_LOG", "info");
    });
    s.expect("bot> tick v0", SECS);
    for n in 1..=100 {
        sb.script("t.lua", &version(n));
    }
    wait_for_answer(&mut s, "!ver", "bot> v100");
    // After the swap nothing of an older generation may run.
    let after = s.drain(Duration::from_millis(400));
    assert!(after.iter().any(|l| l == "bot> tick v100"), "{after:?}");
    for l in &after {
        assert!(l == "bot> tick v100" || l == "bot> v100", "leaked: {l}");
    }
    let (_, stderr) = s.finish();
    let loads = stderr.matches("scripts loaded").count();
    assert!((2..=8).contains(&loads), "{loads} loads for 100 rewrites");
}

#[test]
fn messages_during_a_reload_are_handled_exactly_once() {
    let sb = Sandbox::new();
    sb.script(
        "m.lua",
        "function on_load() end\nfunction on_message(m) m:reply('a:' .. m.text) end\n",
    );
    let mut s = sb.session();
    s.expect("* open jid=me@console", SECS);
    // The new generation takes a while to load; messages keep coming.
    sb.script(
        "m.lua",
        "function on_load() bot.sleep(300) end\nfunction on_message(m) m:reply('b:' .. m.text) end\n",
    );
    for i in 0..40 {
        s.send(&format!("msg{i}"));
        std::thread::sleep(Duration::from_millis(15));
    }
    wait_for_answer(&mut s, "last", "bot> b:last");
    let seen = s.seen.clone();
    s.finish();
    for i in 0..40 {
        let answers: Vec<&String> = seen
            .iter()
            .filter(|l| *l == &format!("bot> a:msg{i}") || *l == &format!("bot> b:msg{i}"))
            .collect();
        assert_eq!(answers.len(), 1, "msg{i}: {answers:?}");
    }
}

#[test]
fn scripts_cannot_escape_through_finalizers_or_shared_tables() {
    let sb = Sandbox::new();
    sb.script(
        "a_evil.lua",
        r#"
bot.command("gc", function(m)
  local ok, err = pcall(setmetatable, {}, {__gc = function() while true do end end})
  m:reply("gc " .. tostring(ok) .. " " .. tostring(err):match("__gc[^\n]*"))
end)
function on_message(m)
  local changed = pcall(function() m.chat = "victim@s.whatsapp.net" end)
  local ok = pcall(function() getmetatable(m).__index.reply = function() end end)
  bot.log.warn("META", tostring(getmetatable(m)), tostring(ok), type(("").dump), tostring(changed))
end
"#,
    );
    sb.script(
        "b_victim.lua",
        "function on_message(m) m:reply('to ' .. m.chat) end\n",
    );
    let out = sb.console("hello\n!gc\n");
    out.assert_bot_lines(&[
        "bot> to you@console",
        "bot> to you@console",
        "bot> gc false __gc metamethods are not allowed in moonwire scripts",
    ]);
    assert!(
        out.stderr.contains("META false false nil false"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_first_on_close_answer_stands_even_if_later_scripts_overrun() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[script]\nhook_timeout_ms = 150\n",
    )
    .unwrap();
    sb.script("a.lua", "function on_close(r) return false end\n");
    sb.script("b.lua", "function on_close(r) while true do end end\n");
    sb.script("c.lua", "function on_close(r) while true do end end\n");
    let mut s = sb.session();
    s.expect("* open jid=me@console", SECS);
    // The answer is a.lua's, not the stop at end of input settling it
    // (that line would not say by=script).
    let line = s.step("/drop 408", "* ");
    assert_eq!(line, "* closed code=408 kind=connection_lost by=script");
    let (rest, stderr) = s.finish();
    assert!(rest.is_empty(), "{rest:?}\n{stderr}");
}

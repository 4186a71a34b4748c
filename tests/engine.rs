//! The script engine's execution model through the real binary: handlers
//! that wait, budgets per run, deadlines, queueing, reload order, and the
//! store and JSON conversions at the script's edge.

mod common;

use std::time::Duration;

use common::Sandbox;

const SECS: Duration = Duration::from_secs(20);

#[test]
fn a_waiting_handler_does_not_hold_up_the_next_message() {
    let sb = Sandbox::new();
    sb.script(
        "w.lua",
        r#"
function on_message(m)
  if m.text == "slow" then
    bot.sleep(500)
    m:reply("slow done")
  else
    m:reply("fast " .. m.text)
  end
end
"#,
    );
    // Both go in at once; the fast one is answered while the slow one waits,
    // and the console waits for the sleeper before it ends.
    let out = sb.console("slow\nquick\n");
    out.assert_bot_lines(&["bot> fast quick", "bot> slow done"]);
    assert_eq!(out.code, Some(0));
}

#[test]
fn handlers_start_in_arrival_order() {
    let sb = Sandbox::new();
    sb.script(
        "o.lua",
        r#"
local n = 0
function on_message(m)
  n = n + 1
  local mine = n
  bot.sleep(50 - mine * 10)
  m:reply(m.text .. " started " .. mine)
end
"#,
    );
    let out = sb.console("a\nb\nc\n");
    // Started a, b, c in that order; they finish in reverse.
    out.assert_bot_lines(&["bot> c started 3", "bot> b started 2", "bot> a started 1"]);
}

#[test]
fn the_cpu_budget_is_per_run_not_across_waits() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[script]\nhook_timeout_ms = 100\n",
    )
    .unwrap();
    // Fifty short runs with waits between: far more than 100 ms in all,
    // each run far below it.
    sb.script(
        "b.lua",
        r#"
bot.command("runs", function(m)
  for i = 1, 50 do
    local t = os.clock()
    while os.clock() - t < 0.004 do end
    bot.sleep(2)
  end
  m:reply("all runs done")
end)
bot.command("spin", function(m)
  while true do end
end)
bot.command("yieldloop", function(m)
  -- A bare yield is not a wait: it does not renew the budget.
  while true do coroutine.yield() end
end)
bot.command("ping", function(m) m:reply("pong") end)
"#,
    );
    let out = sb.console("!runs\n!spin\n!yieldloop\n!ping\n");
    out.assert_bot_lines(&["bot> pong", "bot> all runs done"]);
    assert!(
        out.stderr
            .contains("b.lua:11: script exceeded its time budget of 100 ms"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("b.lua:15: script exceeded its time budget of 100 ms"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_deadline_cancels_a_handler_that_waits_forever() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[script]\nhandler_deadline_ms = 300\n",
    )
    .unwrap();
    sb.script(
        "d.lua",
        r#"
bot.command("forever", function(m)
  bot.sleep(600000)
  m:reply("never")
end)
bot.command("ping", function(m) m:reply("pong") end)
"#,
    );
    let out = sb.console("!forever\n!ping\n");
    out.assert_bot_lines(&["bot> pong"]);
    assert!(
        out.stderr.contains(
            "d.lua:3: handler exceeded its deadline of 300 ms (waiting in bot.sleep) and was cancelled"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(out.code, Some(0));
}

#[test]
fn beyond_max_waiting_work_queues_and_nothing_is_dropped() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[script]\nmax_waiting = 2\n",
    )
    .unwrap();
    sb.script(
        "q.lua",
        r#"
local active, most, done = 0, 0, 0
function on_message(m)
  active = active + 1
  if active > most then most = active end
  bot.sleep(30)
  active = active - 1
  done = done + 1
  if done == 8 then m:reply("done 8, at most " .. most .. " waited") end
end
"#,
    );
    let out = sb.console(&"x\n".repeat(8));
    out.assert_bot_lines(&["bot> done 8, at most 2 waited"]);
}

#[test]
fn on_close_may_wait_within_the_decision_deadline() {
    let sb = Sandbox::new();
    sb.script(
        "c.lua",
        r#"
function on_close(r)
  bot.sleep(50)
  return false
end
"#,
    );
    let out = sb.console("/drop 408\n/sleep 200\n");
    let states: Vec<&String> = out.stdout.iter().filter(|l| l.starts_with("* ")).collect();
    assert!(
        states
            .last()
            .is_some_and(|l| l.starts_with("* closed code=408")),
        "{states:?}\n{}",
        out.stderr
    );
}

#[test]
fn reload_runs_new_top_levels_then_old_unload_then_new_load() {
    let sb = Sandbox::new();
    sb.script(
        "r.lua",
        r#"
bot.log.warn("ORDER v1 top level")
function on_unload()
  bot.store.set("handoff", "left by v1")
  bot.log.warn("ORDER v1 on_unload")
end
bot.command("v", function(m) m:reply("v1") end)
"#,
    );
    let mut s = sb.session();
    s.expect("* open jid=me@console", SECS);
    s.send("!v");
    s.expect("bot> v1", SECS);
    sb.script(
        "r.lua",
        r#"
bot.log.warn("ORDER v2 top level")
function on_load()
  bot.log.warn("ORDER v2 on_load sees " .. tostring(bot.store.get("handoff")))
end
bot.command("v", function(m) m:reply("v2") end)
"#,
    );
    let deadline = std::time::Instant::now() + SECS;
    loop {
        s.send("!v");
        if s.drain(Duration::from_millis(150))
            .iter()
            .any(|l| l == "bot> v2")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", s.stderr());
    }
    let (_, err) = s.finish();
    let at = |needle: &str| {
        err.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing:\n{err}"))
    };
    let top = at("ORDER v2 top level");
    let unload = at("ORDER v1 on_unload");
    let load = at("ORDER v2 on_load sees left by v1");
    assert!(top < unload && unload < load, "{err}");
}

#[test]
fn modules_have_print_and_require_of_their_own() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.scripts().join("lib")).unwrap();
    std::fs::write(
        sb.scripts().join("lib/inner.lua"),
        "return { word = 'inner' }\n",
    )
    .unwrap();
    std::fs::write(
        sb.scripts().join("lib/outer.lua"),
        "print('MODULE PRINT works')\nlocal inner = require('lib.inner')\nreturn { word = 'outer+' .. inner.word }\n",
    )
    .unwrap();
    sb.script(
        "m.lua",
        "local outer = require('lib.outer')\nbot.command('w', function(m) m:reply(outer.word) end)\n",
    );
    let out = sb.console_with("!w\n", |c| {
        c.env("MOONWIRE_LOG", "info");
    });
    out.assert_bot_lines(&["bot> outer+inner"]);
    assert!(out.stderr.contains("MODULE PRINT works"), "{}", out.stderr);
}

#[test]
fn repeated_errors_are_folded_into_a_count() {
    let sb = Sandbox::new();
    sb.script("e.lua", "bot.every(1, function() error('boom') end)\n");
    let out = sb.console("/sleep 1600\n");
    let booms = out.stderr.matches("e.lua:1: boom").count();
    assert!((2..10).contains(&booms), "{booms} reports:\n{}", out.stderr);
    assert!(out.stderr.contains("times"), "{}", out.stderr);
}

#[test]
fn the_store_refuses_what_json_cannot_hold_and_survives_deep_values() {
    let sb = Sandbox::new();
    sb.script(
        "s.lua",
        r#"
local function try(f) local ok, err = pcall(f) return ok and "ok" or tostring(err):gsub("^.-:%d+: ", "") end
bot.command("deep", function(m)
  local t = {} local c = t for i = 1, 2000 do c[1] = {} c = c[1] end
  m:reply(try(function() bot.store.set("k", t) end))
end)
bot.command("mixed", function(m)
  m:reply(try(function() bot.store.set("k", {1, 2, x = 3, [true] = 4}) end))
end)
bot.command("nan", function(m)
  m:reply(try(function() bot.store.set("k", 0/0) end))
end)
bot.command("exact", function(m)
  bot.store.set("k", {1, 2.5, "three", {a = false}})
  local v = bot.store.get("k")
  m:reply(math.type(v[1]) .. " " .. v[2] .. " " .. v[3] .. " " .. tostring(v[4].a) .. " " .. #v)
end)
bot.command("json", function(m)
  local s = bot.json.encode({n = 1, list = {1, 2}})
  local back = bot.json.decode(s)
  local bad, err = bot.json.decode("{nope")
  local null = bot.json.decode("null")
  m:reply(s .. " " .. back.list[2] .. " " .. tostring(bad) .. " " .. tostring(err ~= nil) .. " " .. tostring(null))
end)
bot.command("ping", function(m) m:reply("pong") end)
"#,
    );
    let out = sb.console("!deep\n!mixed\n!nan\n!exact\n!json\n!ping\n");
    let lines = out.bot_lines();
    assert_eq!(lines.len(), 6, "{lines:?}\n{}", out.stderr);
    assert!(
        lines[0].contains("nested deeper than 64 levels"),
        "{lines:?}"
    );
    assert!(lines[1].contains("key"), "{lines:?}");
    assert!(lines[2].contains("JSON cannot hold"), "{lines:?}");
    assert_eq!(lines[3], "bot> integer 2.5 three false 4");
    assert_eq!(lines[4], r#"bot> {"list":[1,2],"n":1} 2 nil true nil"#);
    assert_eq!(lines[5], "bot> pong");
}

#[test]
fn bot_send_parses_recipients_like_the_api() {
    let sb = Sandbox::new();
    sb.script(
        "r.lua",
        r#"
bot.command("go", function(m)
  local id, err = bot.send("nonsense", "hi")
  m:reply("nonsense: " .. tostring(id) .. " " .. tostring(err))
  bot.send("+15551234567", "to a phone")
end)
"#,
    );
    let out = sb.console("!go\n");
    out.assert_bot_lines(&[
        r#"bot> nonsense: nil recipient "nonsense" is neither a JID (user@server) nor a phone number"#,
        "bot> [15551234567@s.whatsapp.net] to a phone",
    ]);
}

#[test]
fn check_warns_about_misspelled_hooks_and_twice_registered_commands() {
    let sb = Sandbox::new();
    sb.script(
        "a.lua",
        "function on_mesage(m) end\nfunction onopen() end\nbot.command('x', function() end)\n",
    );
    sb.script("b.lua", "bot.command('x', function() end)\n");
    sb.script(
        "c.lua",
        "local s = ('a'):rep(1e5)\nlocal r = s:find('.-.-.-.-b')\n",
    );
    let out = sb.cmd().arg("check").output().expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("a.lua:1: warning: global function on_mesage looks like a misspelling of the hook on_message"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "warning: global function onopen looks like a misspelling of the hook on_open"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("b.lua:1: warning: command !x is registered twice: at ")
            && stdout.contains("a.lua:3 and at "),
        "{stdout}"
    );
    // A pathological pattern at top level is stopped, not hung on.
    assert!(
        stdout.contains("c.lua:2: script exceeded its time budget"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_locates_errors_once_in_any_file() {
    let sb = Sandbox::new();
    std::fs::write(sb.path().join("notes.txt"), "this is not lua\n").unwrap();
    let out = sb
        .cmd()
        .arg("check")
        .arg(sb.path().join("notes.txt"))
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().next().unwrap_or("");
    assert!(line.contains("notes.txt:1: "), "{stdout}");
    assert_eq!(line.matches("notes.txt").count(), 1, "{stdout}");
}

#[test]
fn a_script_changing_its_bot_table_changes_only_its_own() {
    let sb = Sandbox::new();
    sb.script(
        "a.lua",
        "bot.json.encode = function() return 'evil' end\nbot.send = nil\nbot.http = nil\n",
    );
    sb.script(
        "b.lua",
        "bot.command('j', function(m) bot.send(m.chat, bot.json.encode({1}) .. ' ' .. type(bot.http.get)) end)\n",
    );
    let out = sb.console("!j\n");
    out.assert_bot_lines(&["bot> [1] function"]);
}

//! Scripts that try to get out of their time budget or memory limit, and a
//! sender who tries to wedge the bot with text: every attempt is stopped
//! and the instance keeps answering.

mod common;

use std::time::Duration;

use common::Sandbox;

/// One attack each: `(name, body of a command handler)`.
const CASES: &[(&str, &str)] = &[
    ("loop", "while true do end"),
    (
        "pcall_loop",
        "while true do pcall(function() while true do end end) end",
    ),
    (
        "xpcall_both",
        "xpcall(function() while true do end end, function() while true do end end)",
    ),
    (
        "xpcall_handler_loops",
        "xpcall(function() error('x') end, function() while true do end end)",
    ),
    (
        "wrap_close",
        "coroutine.wrap(function() local x <close> = setmetatable({}, {__close = function() while true do end end}) while true do end end)()",
    ),
    (
        "resume_close",
        "local co = coroutine.create(function() local x <close> = setmetatable({}, {__close = function() while true do end end}) while true do end end) coroutine.resume(co) coroutine.close(co)",
    ),
    (
        "close_later",
        "local co = coroutine.create(function() local x <close> = setmetatable({}, {__close = function() while true do end end}) error('x') end) pcall(coroutine.resume, co) KEEP = co",
    ),
    ("close_kept", "if KEEP then coroutine.close(KEEP) end"),
    ("find_2", "local s = ('a'):rep(1e5) s:find('.-.-b')"),
    ("find_5", "local s = ('a'):rep(1e5) s:find('.-.-.-.-.-b')"),
    (
        "plain_find",
        "local s = ('a'):rep(1e6) s:find(('a'):rep(1e5) .. 'b', 1, true)",
    ),
    (
        "match_nested",
        "local s = ('a'):rep(5e4) s:match('^(a-)(a-)(a-)(a-)x$')",
    ),
    ("gsub_slow", "local s = ('a'):rep(1e5) s:gsub('.-.-x', 'y')"),
    (
        "gmatch_slow",
        "for a in (('a'):rep(1e4)):gmatch('(.-)(.-)b') do end",
    ),
    ("rep_empty", "string.rep('', 2^62)"),
    ("rep_huge", "string.rep('x', 2^40)"),
    ("rep_sep", "string.rep('', 2^40, '')"),
    ("move", "table.move({}, 1, 2^40, 1, {})"),
    (
        "insert_lying_len",
        "table.insert(setmetatable({}, {__len = function() return 2^40 end}), 1, 'x')",
    ),
    (
        "remove_lying_len",
        "table.remove(setmetatable({}, {__len = function() return 2^40 end}), 1)",
    ),
    (
        "concat_by_index_fn",
        "table.concat(setmetatable({}, {__index = function() return 'x' end}), '', 1, 2^40)",
    ),
    (
        "sort_bad_cmp",
        "local t = {} for i = 1, 5000 do t[i] = i end table.sort(t, function(a, b) return true end)",
    ),
    (
        "sort_loop_cmp",
        "local t = {3, 2, 1} table.sort(t, function(a, b) while true do end end)",
    ),
    ("recursion", "local function f() return 1 + f() end f()"),
    ("tail_recursion", "local function f() return f() end f()"),
    (
        "coroutine_nest",
        "local function nest() return coroutine.wrap(function() return nest()() end) end nest()()",
    ),
    ("pcall_nest", "local function f() return pcall(f) end f()"),
    (
        "tostring_error_object",
        "error(setmetatable({}, {__tostring = function() while true do end end}))",
    ),
    (
        "print_tostring_loop",
        "print(setmetatable({}, {__tostring = function() while true do end end}))",
    ),
    (
        "format_tostring_loop",
        "string.format('%s', setmetatable({}, {__tostring = function() while true do end end}))",
    ),
    (
        "index_chain",
        "local t = setmetatable({}, {}) getmetatable(t).__index = t return t.x",
    ),
    (
        "eq_loop",
        "local mt = {__eq = function() while true do end end} return setmetatable({}, mt) == setmetatable({}, mt)",
    ),
    (
        "gc_refused",
        "setmetatable({}, {__gc = function() while true do end end})",
    ),
    ("date_format", "os.date(('%c'):rep(1e6))"),
    ("memory_string", "local s = ('x'):rep(1e8)"),
    (
        "memory_table",
        "local t = {} for i = 1, 1e9 do t[i] = i end",
    ),
    ("bare_yield", "while true do coroutine.yield() end"),
    (
        "unpack_huge",
        "return select('#', table.unpack({}, 1, 1e8))",
    ),
    (
        "byte_huge",
        "local s = ('x'):rep(1e7) return #{s:byte(1, -1)}",
    ),
    (
        "store_deep",
        "local t = {} local c = t for i = 1, 2000 do c[1] = {} c = c[1] end bot.store.set('k', t)",
    ),
    (
        "json_deep",
        "local t = {} local c = t for i = 1, 2000 do c[1] = {} c = c[1] end assert(bot.json.encode(t) == nil)",
    ),
    ("json_decode_deep", "bot.json.decode(('['):rep(1e5))"),
    ("sleep_bad", "bot.sleep(0/0)"),
];

fn script() -> String {
    let mut src =
        String::from("bot.command('ping', function(m, a) m:reply('pong ' .. a.text) end)\n");
    for (name, body) in CASES {
        src.push_str(&format!(
            "bot.command('{name}', function(m)\n  {body}\nend)\n"
        ));
    }
    // A sender-controlled text against a script's pattern.
    src.push_str("bot.hear('^(.-)(.-)(.-)(.-)x$', function(m) m:reply('matched') end)\n");
    src
}

#[test]
fn every_attack_is_stopped_and_the_bot_keeps_answering() {
    assert!(CASES.len() >= 40, "the corpus has {} cases", CASES.len());
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[script]\nhook_timeout_ms = 200\nmemory_limit_mb = 32\n",
    )
    .unwrap();
    sb.script("attacks.lua", &script());
    let mut s = sb.session();
    s.expect("* open jid=me@console", Duration::from_secs(20));
    // The slack is for a loaded machine; a wedged engine never answers.
    let within = Duration::from_secs(20);
    for (name, _) in CASES {
        s.send(&format!("!{name}"));
        s.send(&format!("!ping {name}"));
        let before = s.expect(&format!("bot> pong {name}"), within);
        assert!(
            before.iter().all(|l| !l.starts_with("bot> ")),
            "{name}: {before:?}"
        );
    }
    // Remote: any sender's text against a bot.hear pattern.
    s.send(&"a".repeat(3000));
    s.send("!ping after the text");
    s.expect("bot> pong after the text", within);
    let (_, err) = s.finish();
    assert!(
        err.contains("bot.hear pattern") && err.contains("time budget"),
        "{err}"
    );
    for must in [
        "script exceeded its time budget of 200 ms",
        "out of memory",
        "stack overflow",
        "too large",
        "__gc metamethods are not allowed",
        "nested deeper than 64 levels",
    ] {
        assert!(err.contains(must), "no {must:?} in:\n{err}");
    }
}

#[test]
fn check_stops_a_pathological_top_level_too() {
    let sb = Sandbox::new();
    sb.script(
        "slow.lua",
        "local s = ('a'):rep(1e5)\nlocal r = s:find('.-.-.-.-.-b')\n",
    );
    let out = sb.cmd().arg("check").output().expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("slow.lua:2: script exceeded its time budget"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1));
}

//! The console's simulated groups end to end: the real binary, piped
//! stdin, stdout lines. `/group`, `/join`, `/leave`, `/promote`,
//! `/demote`, `/subject` fire `on_group`; `bot.groups.*` answers from the
//! simulation with the reasons a server gives; group messages carry the
//! group as `m.chat` and the member as `m.sender`.

mod common;

use common::Sandbox;

/// Says every group event on one line.
const SAY_EVENTS: &str = r#"
function on_group(e)
  bot.send("you@console", string.format("%s %s [%s] by=%s value=%s", e.chat, e.action,
    table.concat(e.participants, ","), tostring(e.by), tostring(e.value)))
end
"#;

#[test]
fn group_lines_fire_on_group() {
    let sb = Sandbox::new();
    sb.script("events.lua", SAY_EVENTS);
    let mut s = sb.session();
    let mut step = |line: &str, want: &str| {
        let got = s.step(line, "bot> ");
        assert_eq!(got, want, "after {line}");
    };
    step(
        "/group team@g.us Lunch crew you@console ann@console",
        "bot> team@g.us create [you@console,ann@console,me@console] by=you@console value=Lunch crew",
    );
    step(
        "/join team@g.us bob@console",
        "bot> team@g.us add [bob@console] by=bob@console value=nil",
    );
    step(
        "/promote team@g.us bob@console",
        "bot> team@g.us promote [bob@console] by=you@console value=nil",
    );
    step(
        "/demote team@g.us bob@console",
        "bot> team@g.us demote [bob@console] by=you@console value=nil",
    );
    step(
        "/subject team@g.us Dinner crew",
        "bot> team@g.us subject [] by=you@console value=Dinner crew",
    );
    step(
        "/leave team@g.us bob@console",
        "bot> team@g.us remove [bob@console] by=bob@console value=nil",
    );
    s.output();
}

#[test]
fn bad_group_lines_say_why_and_change_nothing() {
    let sb = Sandbox::new();
    sb.script("events.lua", SAY_EVENTS);
    let out = sb.console(
        "/join nowhere@g.us ann@console\n\
         /group team@s.whatsapp.net Team you@console\n\
         /group team@g.us Team you@console\n\
         /group team@g.us Again you@console\n\
         /join team@g.us you@console\n\
         /leave team@g.us zed@console\n\
         /promote team@g.us zed@console\n",
    );
    out.assert_bot_lines(&[
        "bot> team@g.us create [you@console,me@console] by=you@console value=Team",
    ]);
    for want in [
        "no group nowhere@g.us",
        "not a group id",
        "team@g.us exists already",
        "you@console is in team@g.us already",
        "/leave: zed@console is not in team@g.us",
        "/promote: zed@console is not in team@g.us",
    ] {
        assert!(out.stderr.contains(want), "{want}: {}", out.stderr);
    }
}

/// `!admins`, `!kick USER`, `!promote USER`: a small moderation script.
const MODERATE: &str = r#"
local function admins(g)
  local list = {}
  for _, p in ipairs(g.participants) do
    if p.admin then list[#list + 1] = p.jid .. (p.super_admin and "*" or "") end
  end
  return table.concat(list, ",")
end

bot.command("admins", function(m)
  local g, err = bot.groups.info(m.chat)
  if not g then return m:reply("info failed: " .. err) end
  m:reply(string.format("%s owner=%s admins=%s members=%d", g.subject, tostring(g.owner),
    admins(g), #g.participants))
end)

bot.command("kick", function(m, args)
  local ok, err = bot.groups.remove(m.chat, args[1])
  m:reply(ok and ("kicked " .. args[1]) or ("kick failed: " .. err))
end)

bot.command("add", function(m, args)
  local ok, err = bot.groups.add(m.chat, { args[1], args[2] })
  m:reply(ok and "added" or ("add failed: " .. err))
end)

function on_group(e)
  if e.by == "me@console" then
    bot.send("you@console", "seen " .. e.action .. " " .. table.concat(e.participants, ","))
  end
end
"#;

#[test]
fn admin_calls_need_the_bot_to_be_an_admin_and_fire_on_group() {
    let sb = Sandbox::new();
    sb.script("moderate.lua", MODERATE);
    let mut s = sb.session();
    s.send("/group team@g.us Team you@console ann@console bob@console");
    assert_eq!(
        s.step("/from team@g.us ann@console !admins", "bot> "),
        "bot> [team@g.us] Team owner=you@console admins=you@console* members=4"
    );
    // Not an admin yet: the server's reason, nothing changes.
    assert_eq!(
        s.step("/from team@g.us ann@console !kick bob@console", "bot> "),
        "bot> [team@g.us] kick failed: 403 not-authorized: the bot is not an admin of team@g.us"
    );
    // The owner promotes the bot; the cache learns it from the event.
    s.send("/promote team@g.us me@console");
    assert_eq!(
        s.step("/from team@g.us ann@console !admins", "bot> "),
        "bot> [team@g.us] Team owner=you@console admins=you@console*,me@console members=4"
    );
    assert_eq!(
        s.step("/from team@g.us ann@console !kick bob@console", "bot "),
        "bot removed bob@console from team@g.us"
    );
    let mut rest = vec![
        s.expect_starting("bot> ", common::LINE_WAIT),
        s.expect_starting("bot> ", common::LINE_WAIT),
    ];
    rest.sort();
    assert_eq!(
        rest,
        [
            "bot> [team@g.us] kicked bob@console",
            "bot> seen remove bob@console"
        ]
    );
    assert_eq!(
        s.step("/from team@g.us ann@console !admins", "bot> "),
        "bot> [team@g.us] Team owner=you@console admins=you@console*,me@console members=3"
    );
    // One user of two is already there: the call fails naming who and why,
    // the other is added.
    assert_eq!(
        s.step(
            "/from team@g.us ann@console !add ann@console cy@console",
            "bot "
        ),
        "bot added cy@console to team@g.us"
    );
    let mut rest = vec![
        s.expect_starting("bot> ", common::LINE_WAIT),
        s.expect_starting("bot> ", common::LINE_WAIT),
    ];
    rest.sort();
    assert_eq!(
        rest,
        [
            "bot> [team@g.us] add failed: ann@console: 409 conflict: already in the group",
            "bot> seen add cy@console",
        ]
    );
    s.output();
}

#[test]
fn the_other_group_calls_answer_from_the_simulation() {
    let sb = Sandbox::new();
    sb.script(
        "calls.lua",
        r#"
local function say(...) bot.send("you@console", table.concat({...}, " ")) end
bot.command("go", function(m)
  local g, err = bot.groups.info("nowhere@g.us")
  say("unknown:", tostring(g), err)
  local ok, err = bot.groups.info("15551234567@s.whatsapp.net")
  say("not a group:", tostring(ok), err)
  local link, err = bot.groups.invite_link("team@g.us")
  say("link:", tostring(link), tostring(err))
  local all = bot.groups.list()
  local names = {}
  for _, g in ipairs(all) do names[#names + 1] = g.jid .. "=" .. g.subject end
  say("list:", table.concat(names, ","))
  say("subject:", tostring(bot.groups.set_subject("team@g.us", "Renamed")))
  say("info:", bot.groups.info("team@g.us").subject)
  local ok, err = bot.groups.set_subject("team@g.us", "")
  say("empty subject:", tostring(ok), err)
  say("leave:", tostring(bot.groups.leave("team@g.us")))
  local g, err = bot.groups.info("team@g.us")
  say("after leaving:", tostring(g), err)
  say("list:", #bot.groups.list())
end)
"#,
    );
    let out = sb.console(
        "/group team@g.us Team you@console\n\
         /group other@g.us Other you@console\n\
         !go\n",
    );
    out.assert_bot_lines(&[
        "bot> unknown: nil 404 item-not-found: no group nowhere@g.us",
        "bot> not a group: nil bot.groups.info: \"15551234567@s.whatsapp.net\" is not a group id (…@g.us)",
        "bot> link: nil 403 not-authorized: the bot is not an admin of team@g.us",
        "bot> list: other@g.us=Other,team@g.us=Team",
        "bot set the subject of team@g.us: Renamed",
        "bot> subject: true",
        "bot> info: Renamed",
        "bot> empty subject: nil bot.groups.set_subject: the subject is empty",
        "bot left team@g.us",
        "bot> leave: true",
        "bot> after leaving: nil 403 forbidden: the bot is not in team@g.us",
        "bot> list: 1",
    ]);
}

#[test]
fn a_wrong_argument_is_raised_at_the_scripts_line() {
    let sb = Sandbox::new();
    sb.script(
        "bad.lua",
        "bot.command(\"go\", function(m)\n  bot.groups.remove({}, \"a@console\")\nend)\n",
    );
    let out = sb.console("!go\n");
    assert!(
        out.stderr.contains("bad.lua:2") && out.stderr.contains("needs a group id"),
        "{}",
        out.stderr
    );
}

#[test]
fn group_messages_carry_the_group_and_the_member_and_replies_go_to_the_group() {
    let sb = Sandbox::new();
    sb.script(
        "echo.lua",
        r#"
function on_message(m)
  m:reply(string.format("chat=%s sender=%s group=%s", m.chat, m.sender, tostring(m.is_group)))
  bot.send(m.chat, { text = "hi @ann", mentions = { m.sender } })
end
"#,
    );
    let out = sb.console(
        "/group team@g.us Team ann@console\n\
         /from team@g.us ann@console hello\n",
    );
    out.assert_bot_lines(&[
        "bot> [team@g.us] chat=team@g.us sender=ann@console group=true",
        "bot> [team@g.us] hi @ann",
    ]);
}

#[test]
fn group_changes_while_the_bot_is_away_arrive_at_its_next_login() {
    let sb = Sandbox::new();
    sb.script("events.lua", SAY_EVENTS);
    let mut s = sb.session();
    s.step("/group team@g.us Team you@console", "bot> ");
    s.send("/drop 408");
    s.expect_starting("* reconnecting", common::LINE_WAIT);
    s.send("/join team@g.us ann@console");
    assert_eq!(
        s.expect_starting("bot> ", common::LINE_WAIT),
        "bot> team@g.us add [ann@console] by=ann@console value=nil"
    );
    s.output();
}

#[test]
fn hostile_arguments_are_refused_without_harm() {
    let sb = Sandbox::new();
    sb.script(
        "hostile.lua",
        r#"
local function say(...) bot.send("you@console", table.concat({...}, " ")) end
bot.command("go", function(m)
  local many = {}
  for i = 1, 5000 do many[i] = tostring(15550000000 + i) end
  local ok, err = bot.groups.add("team@g.us", many)
  say("many:", tostring(ok), err)
  ok, err = bot.groups.set_subject("team@g.us", string.rep("x", 10000))
  say("long subject:", tostring(ok), err)
  ok, err = bot.groups.remove("team@g.us", { "team@g.us" })
  say("a group as a user:", tostring(ok), err)
  ok, err = bot.groups.info(string.rep("a", 100000) .. "@g.us")
  say("a huge id:", tostring(ok), err and err:sub(1, 24))
  ok, err = pcall(bot.groups.add, "team@g.us", { "a@console", {} })
  say("a table as a user:", tostring(ok), tostring(err):match("a user is a JID[^,]*"))
  say("still fine:", bot.groups.info("team@g.us").subject)
end)
"#,
    );
    let out = sb.console("/group team@g.us Team you@console\n/promote team@g.us me@console\n!go\n");
    out.assert_bot_lines(&[
        "bot> many: nil bot.groups.add: 1025 users given; at most 1024 at once",
        "bot> long subject: nil bot.groups.set_subject: the subject has 10000 characters; at most 100",
        "bot> a group as a user: nil bot.groups.remove: \"team@g.us\" is a group, not a user",
        "bot> a huge id: nil 404 item-not-found: no g",
        "bot> a table as a user: false a user is a JID or a phone number",
        "bot> still fine: Team",
    ]);
}

#[test]
fn a_group_change_comes_after_the_sends_made_before_it() {
    let sb = Sandbox::new();
    // Nothing waits before the change: the reply is still in the
    // handler's first part when the subject changes.
    sb.script(
        "order.lua",
        r#"
bot.command("rename", function(m)
  m:reply("renaming")
  bot.groups.set_subject("team@g.us", "Renamed")
  m:reply("renamed")
end)
"#,
    );
    let out = sb.console(
        "/group team@g.us Team you@console\n\
         /from team@g.us you@console !rename\n",
    );
    out.assert_bot_lines(&[
        "bot> [team@g.us] renaming",
        "bot set the subject of team@g.us: Renamed",
        "bot> [team@g.us] renamed",
    ]);
}

#[test]
fn a_group_change_waits_for_every_handler_of_the_message_to_start() {
    let sb = Sandbox::new();
    // a.lua starts first and asks for a change; b.lua's answer, made after
    // it in the same message's start, still goes out first: the change
    // waits for the commit of the whole start (handled mark included), so
    // a crash before it undoes the run and the change alike.
    sb.script(
        "a.lua",
        r#"
function on_message(m)
  if m.text == "go" then bot.groups.set_subject("team@g.us", "Renamed") end
end
"#,
    );
    sb.script(
        "b.lua",
        r#"
function on_message(m)
  if m.text == "go" then m:reply("b saw it") end
end
"#,
    );
    let out = sb.console(
        "/group team@g.us Team you@console\n\
         /from team@g.us you@console go\n",
    );
    out.assert_bot_lines(&[
        "bot> [team@g.us] b saw it",
        "bot set the subject of team@g.us: Renamed",
    ]);
}

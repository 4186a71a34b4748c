//! The console's rich message lines end to end: the real binary, piped
//! stdin, stdout lines (`/from`, `/image`, `/file`, `/voice`, `/reply`,
//! `/react`, `/edit`, `/revoke`; the bot's media, reaction, edit and revoke
//! lines; `m:download()` copying what was sent in).

mod common;

use common::Sandbox;

/// A script that says what it got, one `bot>` line per message.
const ECHO_KINDS: &str = r#"
function on_message(m)
  local parts = { m.id, m.type, m.chat, m.sender, tostring(m.is_group) }
  if m.text then parts[#parts + 1] = "text=" .. m.text end
  if m.media then
    parts[#parts + 1] = string.format("media=%s,%s,%s,%s,voice=%s", m.media.kind, m.media.mime,
      tostring(m.media.size), tostring(m.media.file_name), tostring(m.media.voice))
  end
  if m.quoted then
    parts[#parts + 1] = string.format("quoted=%s,%s,%s,%s", m.quoted.id, tostring(m.quoted.sender),
      tostring(m.quoted.text), tostring(m.quoted.type))
  end
  if m.target then parts[#parts + 1] = "target=" .. m.target end
  if m.reaction then parts[#parts + 1] = "reaction=" .. m.reaction end
  bot.send("you@console", table.concat(parts, " "))
end
"#;

#[test]
fn every_message_line_reaches_on_message_as_its_kind() {
    let sb = Sandbox::new();
    sb.script("echo.lua", ECHO_KINDS);
    std::fs::write(sb.path().join("cat.jpg"), b"0123456789").unwrap();
    std::fs::write(sb.path().join("hi.ogg"), b"ogg!").unwrap();
    std::fs::write(sb.path().join("report.pdf"), b"%PDF").unwrap();
    let out = sb.console(
        "hello\n\
         /image cat.jpg a fine cat\n\
         /voice hi.ogg\n\
         /file report.pdf\n\
         /reply c2 nice one\n\
         /react c2 👍\n\
         /edit c1 hello again\n\
         /revoke c1\n\
         /from team@g.us ann@console hi all\n\
         /reply c99 unknown\n",
    );
    out.assert_bot_lines(&[
        "bot> c1 text you@console you@console false text=hello",
        "bot> c2 image you@console you@console false text=a fine cat media=image,image/jpeg,10,cat.jpg,voice=false",
        "bot> c3 audio you@console you@console false media=audio,audio/ogg; codecs=opus,4,hi.ogg,voice=true",
        "bot> c4 document you@console you@console false media=document,application/pdf,4,report.pdf,voice=false",
        "bot> c5 text you@console you@console false text=nice one quoted=c2,you@console,a fine cat,image",
        "bot> c6 reaction you@console you@console false target=c2 reaction=👍",
        "bot> c7 edit you@console you@console false text=hello again target=c1",
        "bot> c8 revoke you@console you@console false target=c1",
        "bot> c9 text team@g.us ann@console true text=hi all",
        "bot> c10 text you@console you@console false text=unknown quoted=c99,nil,nil,nil",
    ]);
}

#[test]
fn a_media_line_for_a_missing_file_says_so_and_sends_nothing() {
    let sb = Sandbox::new();
    sb.script("echo.lua", ECHO_KINDS);
    let out = sb.console("/image nowhere.jpg\nafter\n");
    // Nothing was sent: the next message is still c1.
    out.assert_bot_lines(&["bot> c1 text you@console you@console false text=after"]);
    assert!(out.stderr.contains("nowhere.jpg"), "{}", out.stderr);
}

#[test]
fn ids_start_at_c1_in_every_run_of_one_data_dir() {
    let sb = Sandbox::new();
    sb.script("echo.lua", ECHO_KINDS);
    sb.console("a\nb\n").assert_bot_lines(&[
        "bot> c1 text you@console you@console false text=a",
        "bot> c2 text you@console you@console false text=b",
    ]);
    // The inbox holds the first run's c1 and c2; these are not taken for
    // them (nor numbered on from them).
    sb.console("c\nd\n").assert_bot_lines(&[
        "bot> c1 text you@console you@console false text=c",
        "bot> c2 text you@console you@console false text=d",
    ]);
}

#[test]
fn download_copies_what_was_sent_in_and_a_reply_sends_it_back() {
    // Each run on a fresh data dir, so each file is new.
    let run = |file: &str, bytes: &[u8], line: &str| {
        let sb = Sandbox::new();
        sb.script("media.lua", DOWNLOAD_AND_REPLY);
        std::fs::write(sb.path().join(file), bytes).unwrap();
        let out = sb.console(line);
        (sb, out)
    };
    let (sb, out) = run("cat.jpg", b"0123456789", "/image cat.jpg a cat\n");
    out.assert_bot_lines(&["bot> saved c1.jpg", "bot> <image c1.jpg 10> back: a cat"]);
    let saved = sb.path().join("data/media/console/c1.jpg");
    assert_eq!(std::fs::read(&saved).unwrap(), b"0123456789");

    let (_sb, out) = run("hi.ogg", b"ogg!", "/voice hi.ogg\n");
    out.assert_bot_lines(&["bot> saved c1.ogg", "bot> <voice c1.ogg 4>"]);
    let (_sb, out) = run("r.pdf", b"%PDF-1", "/file r.pdf\n");
    out.assert_bot_lines(&["bot> saved c1.pdf", "bot> <document copy.pdf 6>"]);
}

const DOWNLOAD_AND_REPLY: &str = r#"
function on_message(m)
  if not m.media then return end
  local path, err = m:download()
  if not path then return bot.send("you@console", "no: " .. err) end
  local f = path:match("[^/]+$")
  bot.send("you@console", "saved " .. f)
  if m.media.voice then
    m:reply({ audio = path, voice = true })
  elseif m.type == "document" then
    m:reply({ document = path, file_name = "copy.pdf" })
  else
    m:reply({ image = path, caption = "back: " .. (m.text or "") })
  end
end
"#;

#[test]
fn a_download_past_the_size_limit_is_refused() {
    let sb = Sandbox::new();
    sb.script(
        "media.lua",
        r#"
function on_message(m)
  local path, err = m:download()
  bot.send("you@console", tostring(path) .. " | " .. tostring(err))
end
"#,
    );
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[script]\nmax_media_mb = 1\n",
    )
    .unwrap();
    std::fs::write(sb.path().join("big.bin"), vec![7u8; 1024 * 1024 + 1]).unwrap();
    let out = sb.console_with("/file big.bin\nplain\n", |c| {
        c.env("MOONWIRE_CONFIG", sb.path().join("moonwire.toml"));
    });
    let lines = out.bot_lines();
    assert!(
        lines[0].starts_with("bot> nil | ") && lines[0].contains("limit"),
        "{lines:?}\n{}",
        out.stderr
    );
    assert_eq!(lines[1], "bot> nil | this message has no media to download");
    assert!(!sb.path().join("data/media/console/c1.bin").exists());
}

#[test]
fn the_bots_rich_sends_have_their_own_lines() {
    let sb = Sandbox::new();
    sb.script(
        "rich.lua",
        r#"
function on_message(m)
  if m.text == "go" then
    local id = bot.send(m.chat, "first draft")
    bot.edit(m.chat, id, "final text")
    bot.revoke(m.chat, id)
    bot.send(m.chat, { document = { data = "abc", mime = "text/plain", file_name = "a.txt" }, caption = "notes" })
    bot.send(m.chat, { sticker = { data = "RIFF....WEBP" } })
    bot.send(m.chat, { location = { lat = 52.52, lng = 13.405, name = "Berlin" } })
    bot.send(m.chat, { poll = { name = "Lunch?", options = { "pizza", "sushi" } } })
    bot.send(m.chat, { text = "hi @15551234567", mentions = { "15551234567" } })
    bot.send("team@g.us", { image = "pic.png" })
    m:react("👍")
    bot.typing(m.chat)
    m:read()
  end
end
"#,
    );
    std::fs::write(sb.scripts().join("pic.png"), b"png!!").unwrap();
    let out = sb.console("go\n");
    let lines = out.bot_lines();
    assert_eq!(lines[0], "bot> first draft", "{}", out.stderr);
    let id = lines[1]
        .strip_prefix("bot edited ")
        .and_then(|l| l.strip_suffix(": final text"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(id.starts_with("3EB0"), "{id}");
    assert_eq!(lines[2], format!("bot revoked {id}"));
    assert_eq!(
        &lines[3..],
        [
            "bot> <document a.txt 3> notes",
            "bot> <sticker sticker.webp 12>",
            "bot> <location 52.52,13.405> Berlin",
            "bot> <poll Lunch? [pizza | sushi] selectable=1>",
            "bot> hi @15551234567",
            "bot> [team@g.us] <image pic.png 5>",
            "bot reacted 👍",
        ]
    );
}

#[test]
fn a_reaction_to_an_older_message_names_it() {
    let sb = Sandbox::new();
    sb.script(
        "react.lua",
        r#"
local first
function on_message(m)
  if not first then first = m return end
  first:react("🎉")
  m:react("✅")
end
"#,
    );
    let out = sb.console("one\ntwo\n");
    out.assert_bot_lines(&["bot reacted 🎉 to c1", "bot reacted ✅"]);
}

#[test]
fn sends_that_would_read_outside_the_two_folders_are_refused() {
    let sb = Sandbox::new();
    std::fs::write(sb.path().join("secret.txt"), b"top secret").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(sb.path().join("secret.txt"), sb.scripts().join("link.txt"))
        .unwrap();
    let secret = sb.path().join("secret.txt").display().to_string();
    sb.script(
        "escape.lua",
        &format!(
            r#"
local tries = {{ "../secret.txt", "{secret}", "/etc/passwd", "link.txt", "../scripts/../secret.txt" }}
function on_message(m)
  for _, p in ipairs(tries) do
    local id, err = bot.send(m.chat, {{ document = p }})
    bot.send(m.chat, tostring(id) .. " " .. (err or ""))
  end
end
"#
        ),
    );
    let out = sb.console("go\n");
    let lines = out.bot_lines();
    assert_eq!(lines.len(), 5, "{lines:?} {}", out.stderr);
    for l in &lines {
        assert!(
            l.starts_with("bot> nil document: ") && l.contains("outside the scripts folder"),
            "{l}"
        );
    }
    assert!(!out.stdout.iter().any(|l| l.contains("<document")));
}

#[test]
fn a_console_instance_in_the_config_runs_its_own_scripts_folder() {
    let sb = Sandbox::new();
    sb.script(
        "who.lua",
        "function on_message(m) bot.send(m.chat, 'shared') end\n",
    );
    let shop = sb.path().join("shop");
    std::fs::create_dir_all(&shop).unwrap();
    std::fs::write(
        shop.join("who.lua"),
        "function on_message(m) bot.send(m.chat, 'shop') end\n",
    )
    .unwrap();
    std::fs::write(
        sb.path().join("moonwire.toml"),
        "[[instance]]\nname = \"console\"\nchannel = \"console\"\nscripts = \"shop\"\n",
    )
    .unwrap();
    sb.console("hi\n").assert_bot_lines(&["bot> shop"]);
    // An explicit --scripts still wins.
    let shared = sb.scripts();
    sb.console_with("hi\n", |c| {
        c.arg("--scripts").arg(&shared);
    })
    .assert_bot_lines(&["bot> shared"]);
}

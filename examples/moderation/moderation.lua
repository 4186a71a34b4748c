-- moderation.lua: keep group chats civil.
--
-- In groups, a message with a banned word earns its sender a warning and a
-- strike; from the third strike on the bot says so, for an admin to act
-- (moonwire can't remove anyone from a group). Links get a warning too.
--
--   !strikes            how many strikes you have
--   !pardon [JID]       clear your strikes, or someone else's (admins)
--   !watch / !unwatch   moderate this chat although it isn't a group: the
--                       `moonwire console` chat is a direct chat (admins)

-- Lua patterns, matched against the lowercased text, so keep them lowercase.
-- %f[%a] and %f[%A] are frontiers: they match at the start and end of a word.
local BANNED = {
  "%f[%a]spam%f[%A]",   -- "spam", but not "spammer" or "spamalot"
  "%f[%a]scam",         -- "scam", "scams", "scammer"
  "fr[e3][e3]%s*money", -- "free money", "fr33money"
}
local LIMIT = 3

-- Who may pardon and watch. Empty means everyone, which is handy for trying
-- the example; for real use list JIDs: { ["15551234567@s.whatsapp.net"] = true }.
local ADMINS = {}

local function is_admin(m)
  return m.from_me or next(ADMINS) == nil or ADMINS[m.sender] == true
end

-- Groups, plus any chat switched on with !watch. Our own messages never count.
local function moderated(m)
  return not m.from_me and (m.is_group or bot.store.get("watch:" .. m.chat) == true)
end

-- Strikes are per sender (across groups) and kept in bot.store, so they
-- survive reloads and restarts.
local function strike(m)
  local key = "strikes:" .. m.sender
  local n = (bot.store.get(key) or 0) + 1
  bot.store.set(key, n)
  if n >= LIMIT then
    m:reply(string.format("⚠️ That's strike %d. An admin will have a look.", n))
  else
    m:reply(string.format("⚠️ Please keep it civil (strike %d of %d).", n, LIMIT))
  end
end

-- "%S" matches any message with some text; the banned list is checked here
-- rather than with one bot.hear per word, to lowercase once and strike once.
bot.hear("%S", function(m)
  if not moderated(m) then return end
  local text = m.text:lower()
  for _, pattern in ipairs(BANNED) do
    if text:find(pattern) then
      strike(m)
      return
    end
  end
end)

-- The capture (the URL) is passed after the message.
bot.hear("(https?://%S+)", function(m, url)
  if not moderated(m) then return end
  local host = url:match("^https?://([^/?#]+)") or url
  m:reply("⚠️ Please don't post links here (" .. host .. ").")
end)

bot.command("strikes", function(m)
  local n = bot.store.get("strikes:" .. m.sender) or 0
  if n == 0 then
    m:reply("You have no strikes.")
  else
    m:reply(string.format("You have %d strike%s.", n, n == 1 and "" or "s"))
  end
end, "show your strikes")

bot.command("pardon", function(m, args)
  if not is_admin(m) then
    m:reply("Only admins can pardon.")
    return
  end
  local who = args[1] or m.sender
  bot.store.delete("strikes:" .. who)
  m:reply(who == m.sender and "Your strikes are cleared." or "Strikes cleared for " .. who .. ".")
end, "clear strikes: !pardon [JID]")

bot.command("watch", function(m)
  if not is_admin(m) then return end
  bot.store.set("watch:" .. m.chat, true)
  m:reply("Moderating this chat as if it were a group.")
end, "moderate this chat even if it isn't a group")

bot.command("unwatch", function(m)
  if not is_admin(m) then return end
  bot.store.delete("watch:" .. m.chat)
  m:reply("No longer moderating this chat.")
end, "undo !watch")

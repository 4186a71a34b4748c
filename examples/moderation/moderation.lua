-- moderation.lua: keep group chats civil.
--
-- In a group, a message with a banned word or a link to a banned host
-- earns its sender a warning. After two warnings the next offence removes
-- the sender from the group (the bot must be a group admin for that; if
-- it isn't, it says so and leaves it to the admins). The group's own
-- admins are never warned: the bot asks the group who they are
-- (bot.groups.info, answered from memory after the first time and kept
-- up to date by group events), so there is no list to maintain here.
--
--   !strikes            how many warnings you have in this group
--   !pardon JID         clear someone's warnings (group admins)
--   !admins             who the group's admins are

-- Lua patterns, matched against the lowercased text, so keep them lowercase.
-- %f[%a] and %f[%A] are frontiers: they match at the start and end of a word.
local BANNED_WORDS = {
  "%f[%a]spam%f[%A]",   -- "spam", but not "spammer" or "spamalot"
  "%f[%a]scam",         -- "scam", "scams", "scammer"
  "fr[e3][e3]%s*money", -- "free money", "fr33money"
}
-- Hosts a link may not point to (Lua patterns against the lowercased host).
local BANNED_HOSTS = {
  "^bit%.ly$",
  "^tinyurl%.com$",
  "%.xyz$",
}
local WARNINGS = 2

-- Strikes are per group and sender, kept in bot.store, so they survive
-- reloads and restarts.
local function key(chat, who) return "strikes:" .. chat .. ":" .. who end

-- Whether `who` is an admin of the group `chat`, as the group says.
local function is_admin(chat, who)
  local g = bot.groups.info(chat)
  if not g then return false end
  for _, p in ipairs(g.participants) do
    if p.jid == who then return p.admin end
  end
  return false
end

-- What is wrong with a text, if anything.
local function offence(text)
  text = text:lower()
  for _, pattern in ipairs(BANNED_WORDS) do
    if text:find(pattern) then return "please keep it civil" end
  end
  for url in text:gmatch("https?://%S+") do
    local host = url:match("^https?://([^/?#:]+)") or ""
    for _, pattern in ipairs(BANNED_HOSTS) do
      if host:find(pattern) then return "links to " .. host .. " are not allowed here" end
    end
  end
end

local function strike(m, why)
  local k = key(m.chat, m.sender)
  local n = (bot.store.get(k) or 0) + 1
  if n <= WARNINGS then
    bot.store.set(k, n)
    local last = n == WARNINGS and " Next time you're out." or ""
    m:reply(string.format("⚠️ %s (warning %d of %d).%s", why, n, WARNINGS, last))
    return
  end
  local ok, err = bot.groups.remove(m.chat, m.sender)
  if ok then
    bot.store.delete(k)
    bot.send(m.chat, "Removed " .. m.sender .. " after " .. WARNINGS .. " warnings.")
  else
    bot.store.set(k, n)
    m:reply("⚠️ " .. why .. ". I can't remove you (" .. err .. "); an admin will have a look.")
  end
end

-- "%S" matches any message with some text; words and links are checked
-- here rather than with one bot.hear each, so one message is one strike.
bot.hear("%S", function(m)
  if not m.is_group or m.from_me then return end
  local why = offence(m.text)
  if why and not is_admin(m.chat, m.sender) then strike(m, why) end
end)

bot.command("strikes", function(m)
  local n = bot.store.get(key(m.chat, m.sender)) or 0
  if n == 0 then
    m:reply("You have no warnings.")
  else
    m:reply(string.format("You have %d warning%s.", n, n == 1 and "" or "s"))
  end
end, "show your warnings in this group")

bot.command("pardon", function(m, args)
  if not m.is_group then return end
  if not is_admin(m.chat, m.sender) then
    m:reply("Only group admins can pardon.")
    return
  end
  local who = args[1]
  if not who then
    m:reply("Whom? !pardon JID")
    return
  end
  bot.store.delete(key(m.chat, who))
  m:reply("Warnings cleared for " .. who .. ".")
end, "clear someone's warnings: !pardon JID (group admins)")

bot.command("admins", function(m)
  if not m.is_group then return end
  local g, err = bot.groups.info(m.chat)
  if not g then
    m:reply("I can't tell: " .. err)
    return
  end
  local list = {}
  for _, p in ipairs(g.participants) do
    if p.admin then list[#list + 1] = p.jid end
  end
  m:reply("Admins of " .. g.subject .. ": " .. table.concat(list, ", "))
end, "list the group's admins")

-- Someone who leaves or is removed starts afresh if they come back.
function on_group(e)
  if e.action == "remove" then
    for _, who in ipairs(e.participants) do
      bot.store.delete(key(e.chat, who))
    end
  end
end

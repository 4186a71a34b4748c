-- reminders.lua: "!remind 10m buy milk" and, ten minutes later, "⏰ buy milk".
--
--   !remind 10m buy milk   remind this chat (units: s, m, h)
--   !reminders             list this chat's pending reminders
--   !forget 2              cancel reminder #2
--
-- Reminders are kept in bot.store, so they survive reloads and restarts:
-- on_load schedules them again, and those that came due meanwhile fire
-- right after loading.

local UNITS = { s = 1, m = 60, h = 3600 }
local RETRY_MS = 5000 -- when a reminder can't be sent (not connected yet)

-- Timer handles by reminder id, so !forget can cancel them. Not stored:
-- handles die with this generation of the script, and on_load makes new ones.
local timers = {}

-- bot.store "reminders" holds a list of { id =, chat =, text =, due = unix s }.
local function load_all()
  return bot.store.get("reminders") or {}
end

local function save_all(list)
  bot.store.set("reminders", #list > 0 and list or nil) -- nil deletes the key
end

local function remove(id)
  local list = load_all()
  for i, r in ipairs(list) do
    if r.id == id then
      table.remove(list, i)
      save_all(list)
      return r
    end
  end
end

-- 45 -> "45s", 600 -> "10m", 5400 -> "1h 30m" (rounded up to whole minutes).
local function pretty(secs)
  if secs < 60 then return string.format("%ds", math.max(secs, 0)) end
  local mins = math.ceil(secs / 60)
  if mins < 60 then return string.format("%dm", mins) end
  local h, m = mins // 60, mins % 60
  return m == 0 and string.format("%dh", h) or string.format("%dh %dm", h, m)
end

local schedule

local function fire(r)
  timers[r.id] = nil
  if not bot.send(r.chat, "⏰ " .. r.text) then
    schedule(r, RETRY_MS) -- still in the store: try again shortly
    return
  end
  remove(r.id)
end

function schedule(r, ms)
  timers[r.id] = bot.after(ms, function() fire(r) end)
end

function on_load()
  local now = os.time()
  for _, r in ipairs(load_all()) do
    schedule(r, math.max(r.due - now, 0) * 1000)
  end
end

-- Scripts load before the connection opens, so a reminder that came due
-- while the bot was down (or disconnected) can't be sent at first and waits
-- RETRY_MS; once we're open, send those right away instead.
function on_open()
  local now = os.time()
  for _, r in ipairs(load_all()) do
    if r.due <= now then
      if timers[r.id] then timers[r.id]:cancel() end
      schedule(r, 0)
    end
  end
end

bot.command("remind", function(m, args)
  local n, unit = (args[1] or ""):match("^(%d+)([smh])$")
  local text = args.text:match("^%S+%s+(.+)$") -- everything after the duration
  if not n or not text then
    m:reply("Usage: !remind 10m buy milk (units: s, m, h)")
    return
  end
  local secs = tonumber(n) * UNITS[unit]
  local id = bot.store.get("next_id") or 1
  bot.store.set("next_id", id + 1)

  local r = { id = id, chat = m.chat, text = text, due = os.time() + secs }
  local list = load_all()
  list[#list + 1] = r
  save_all(list)
  schedule(r, secs * 1000)
  m:reply(string.format("Okay, reminder #%d in %s: %s", id, pretty(secs), text))
end, "remind this chat later, e.g. !remind 10m buy milk")

bot.command("reminders", function(m)
  local mine, now = {}, os.time()
  for _, r in ipairs(load_all()) do
    if r.chat == m.chat then mine[#mine + 1] = r end
  end
  if #mine == 0 then
    m:reply("No reminders. Try !remind 10m buy milk")
    return
  end
  table.sort(mine, function(a, b) return a.due < b.due end)
  local lines = {}
  for _, r in ipairs(mine) do
    lines[#lines + 1] = string.format("#%d in %s: %s", r.id, pretty(r.due - now), r.text)
  end
  m:reply(table.concat(lines, "\n"))
end, "list this chat's reminders")

bot.command("forget", function(m, args)
  local id = tonumber((args[1] or ""):match("^%d+$"))
  local found
  for _, r in ipairs(load_all()) do
    if r.id == id and r.chat == m.chat then found = r end -- only this chat's own
  end
  if not found then
    m:reply(id and string.format("No reminder #%d here, see !reminders", id)
      or "Usage: !forget N (the number from !reminders)")
    return
  end
  if timers[found.id] then timers[found.id]:cancel() end
  timers[found.id] = nil
  remove(found.id)
  m:reply(string.format("Forgot #%d: %s", found.id, found.text))
end, "cancel a reminder: !forget N")

-- office-hours.lua: an auto-responder for when nobody is at the desk.
--
-- Outside office hours, the first direct message of the day from each chat
-- gets one "we're closed" answer. Inside the hours the bot stays silent so a
-- human can answer. Groups and your own messages are left alone.
--
--   !hours            show the hours and whether we're open now
--   !hours 8 18       change them: open from 8:00, closed from 18:00
--   !open / !closed   force open or closed whatever the clock says (handy
--                     for trying this out at any time of day)
--   !auto             follow the clock again
--
-- Anyone may use these here; in real use you'd check m.from_me first.

local DAYS = { [2] = true, [3] = true, [4] = true, [5] = true, [6] = true } -- os.date wday: 1 is Sunday
local DAYS_LABEL = "Mon–Fri"
local DEFAULT_HOURS = { from = 9, to = 17 }

-- Everything that can change is kept in bot.store, so it survives reloads
-- and restarts: "hours", "override" and one "answered:<chat>" per chat.
local function hours()
  return bot.store.get("hours") or DEFAULT_HOURS
end

local function hours_label()
  local h = hours()
  return string.format("%s %d:00–%d:00", DAYS_LABEL, h.from, h.to)
end

-- Returns whether we're open now, and whether that was forced by !open/!closed.
local function is_open()
  local override = bot.store.get("override")
  if override then
    return override == "open", true
  end
  local now, h = os.date("*t"), hours() -- local time
  return DAYS[now.wday] == true and now.hour >= h.from and now.hour < h.to, false
end

bot.command("hours", function(m, args)
  if #args > 0 then
    local from = tonumber(args[1]:match("^%d+$"))
    local to = tonumber((args[2] or ""):match("^%d+$"))
    if not (from and to and from < to and to <= 24) then
      m:reply("Usage: !hours FROM TO, whole hours, e.g. !hours 9 17")
      return
    end
    bot.store.set("hours", { from = from, to = to })
    m:reply("Hours set: " .. hours_label() .. ".")
    return
  end
  local open, forced = is_open()
  m:reply(string.format("Hours: %s. Now %s%s.", hours_label(),
    open and "open" or "closed", forced and " (forced, !auto to undo)" or ""))
end, "show or set the office hours")

bot.command("open", function(m)
  bot.store.set("override", "open")
  m:reply("Forced open until !auto.")
end, "act as open whatever the time")

bot.command("closed", function(m)
  bot.store.set("override", "closed")
  m:reply("Forced closed until !auto.")
end, "act as closed whatever the time")

bot.command("auto", function(m)
  bot.store.delete("override")
  m:reply("Following the hours again: " .. hours_label() .. ".")
end, "follow the office hours again")

function on_message(m)
  if m.is_group or m.from_me then return end
  -- Commands answer for themselves ("!" is the default command prefix).
  if m.text and m.text:sub(1, 1) == "!" then return end
  if is_open() then return end

  -- Once per chat per day: remember the date we last answered this chat.
  local key, today = "answered:" .. m.chat, os.date("%Y-%m-%d")
  if bot.store.get(key) == today then return end

  local text = string.format("We're closed, back at %d:00 (%s).", hours().from, hours_label())
  -- Only remember the answer if it went out (send fails while not open).
  if bot.send(m.chat, text) then
    bot.store.set(key, today)
  end
end

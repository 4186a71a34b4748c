-- morning-summary.lua: at 8:00, Monday to Friday, a summary of what came
-- in since the last one, sent to the chats that asked for it.
--
--   !summary here   send the morning summary to this chat
--   !summary stop   stop sending it here
--   !summary        show what it would say now, and when it comes next
--
-- 8:00 is in [script] timezone (the system's zone if unset). The cron has
-- catch_up: if the bot was down at 8:00, the summary goes out once it is
-- back; otherwise a missed morning is skipped.

local SPEC = "0 8 * * 1-5"

-- bot.store: "counts" {[chat] = messages since the last summary},
-- "subscribers" {chat, ...}, "last_summary" (the text last sent).

function on_message(m)
  if m.from_me then return end
  if m.text and m.text:sub(1, #bot.prefix) == bot.prefix then return end -- commands
  local counts = bot.store.get("counts") or {}
  counts[m.chat] = (counts[m.chat] or 0) + 1
  bot.store.set("counts", counts)
end

local function plural(n, word) return n .. " " .. word .. (n == 1 and "" or "s") end

local function summary()
  local rows, total = {}, 0
  for chat, n in pairs(bot.store.get("counts") or {}) do
    rows[#rows + 1] = { chat = chat, n = n }
    total = total + n
  end
  if total == 0 then return "☀️ Good morning! Nothing came in since the last summary." end
  table.sort(rows, function(a, b)
    if a.n ~= b.n then return a.n > b.n end
    return a.chat < b.chat
  end)
  local lines = { string.format("☀️ Good morning! %s in %s since the last summary:",
    plural(total, "message"), plural(#rows, "chat")) }
  for _, r in ipairs(rows) do lines[#lines + 1] = "• " .. r.chat .. ": " .. r.n end
  return table.concat(lines, "\n")
end

local function subscribers() return bot.store.get("subscribers") or {} end

local job = bot.cron(SPEC, function()
  local text = summary()
  for _, chat in ipairs(subscribers()) do
    local _, err = bot.send(chat, text)
    if err then bot.log.warn("summary to " .. chat .. ": " .. err) end
  end
  bot.store.set("last_summary", text)
  bot.store.set("counts", nil)
end, { catch_up = true })

bot.command("summary", function(m, args)
  local list = subscribers()
  local at
  for i, chat in ipairs(list) do
    if chat == m.chat then at = i end
  end
  if args[1] == "here" then
    if not at then
      list[#list + 1] = m.chat
      bot.store.set("subscribers", list)
    end
    m:reply("Okay: the morning summary (Mon–Fri 8:00) comes to this chat.")
  elseif args[1] == "stop" then
    if at then
      table.remove(list, at)
      bot.store.set("subscribers", #list > 0 and list or nil)
      m:reply("Okay: no more morning summaries here.")
    else
      m:reply("This chat doesn't get the morning summary; !summary here to start.")
    end
  elseif args[1] == nil then
    m:reply(summary())
    local next_run = job:next()
    m:reply(next_run and ("Next summary: " .. os.date("%a %d %b %H:%M", next_run)) or "No summary is due.")
  else
    m:reply("Usage: !summary here | !summary stop | !summary")
  end
end, "the morning summary: here, stop, or a preview")

-- default.lua: the script moonwire ships in its scripts folder.
--
-- Every *.lua file in this folder is a script with its own globals. Save a
-- change and the folder is reloaded without dropping the connection.
-- Editor support: see types/moonwire.lua and .luarc.json at the repo root.

-- `!ping`: the quickest way to see that the bot is alive.
bot.command("ping", function(m)
  m:reply("pong")
end, "check that the bot answers")

-- `!help`: one line per command that any script registered. bot.commands()
-- is already sorted by name, so new commands show up here by themselves.
bot.command("help", function(m)
  local lines = {}
  for _, c in ipairs(bot.commands()) do
    -- bot.prefix is "!" unless [script] command_prefix says otherwise.
    if c.description and c.description ~= "" then
      lines[#lines + 1] = bot.prefix .. c.name .. " — " .. c.description
    else
      lines[#lines + 1] = bot.prefix .. c.name
    end
  end
  m:reply(table.concat(lines, "\n"))
end, "list the commands")

-- An unknown `!command` gets a hint instead of silence. Every text message
-- passes through bot.hear; the ones naming a registered command (of any
-- script) are left to it.
local escaped_prefix = bot.prefix:gsub("%p", "%%%0")
bot.hear("^" .. escaped_prefix .. "%s*(%S+)", function(m, name)
  for _, c in ipairs(bot.commands()) do
    if c.name == name then
      return
    end
  end
  m:reply("unknown command " .. bot.prefix .. name .. "; " .. bot.prefix .. "help lists the commands")
end)

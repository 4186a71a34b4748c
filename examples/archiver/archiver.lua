-- archiver.lua: keep every file people send.
--
-- Documents, images, videos, voice notes and stickers sent to the bot are
-- downloaded into the data dir (media/<instance>/) and listed in bot.store;
-- the bot reacts 📥 once a file is saved. Anyone can ask for the list and
-- have a file sent back.
--
--   !files          the archive, newest last
--   !get N          send file N back (as a document, with its name)
--   !forget N       drop file N from the list (the file stays on disk)

local KINDS = { document = true, image = true, video = true, audio = true, sticker = true }

local function archive()
  return bot.store.get("files") or {}
end

local function human(bytes)
  if bytes >= 1024 * 1024 then return string.format("%.1f MB", bytes / (1024 * 1024)) end
  if bytes >= 1024 then return string.format("%.1f KB", bytes / 1024) end
  return bytes .. " bytes"
end

function on_message(m)
  if m.from_me or not m.media or not KINDS[m.media.kind] then return end
  -- m:download() waits for the transfer; other messages are handled meanwhile.
  local path, err = m:download()
  if not path then
    m:reply("Could not save that file: " .. err)
    return
  end
  local files = archive()
  local name = m.media.file_name or path:match("[^/]+$")
  files[#files + 1] = {
    path = path,
    name = name,
    kind = m.media.voice and "voice note" or m.media.kind,
    size = m.media.size or 0,
    from = m.push_name or m.sender,
    caption = m.text,
  }
  bot.store.set("files", files)
  m:react("📥")
  m:reply(string.format("Saved %s (%s) as #%d", name, human(m.media.size or 0), #files))
end

bot.command("files", function(m)
  local files = archive()
  if #files == 0 then
    m:reply("The archive is empty: send me a file.")
    return
  end
  local lines = {}
  for i, f in ipairs(files) do
    lines[#lines + 1] = string.format("#%d %s, %s %s from %s", i, f.name, f.kind, human(f.size), f.from)
  end
  m:reply(table.concat(lines, "\n"))
end, "list the archived files")

local function pick(m, args)
  local n = tonumber(args[1])
  local files = archive()
  if not n or not files[n] then
    m:reply("Which file? Give its number, e.g. !get 1 (see !files)")
    return nil
  end
  return n, files
end

bot.command("get", function(m, args)
  local n, files = pick(m, args)
  if not n then return end
  local f = files[n]
  local id, err = m:reply({ document = f.path, file_name = f.name, caption = f.caption })
  if not id then m:reply("Cannot send it: " .. err) end
end, "send an archived file back")

bot.command("forget", function(m, args)
  local n, files = pick(m, args)
  if not n then return end
  local f = table.remove(files, n)
  bot.store.set("files", files)
  m:reply("Forgot #" .. n .. " (" .. f.name .. ")")
end, "drop a file from the list")

-- moonwire's sandbox prelude: run once per Lua state, on the real globals,
-- before any script. It replaces the few base functions that could let a
-- script escape its time budget, and builds `check`, which turns a failure
-- a Rust function returned into a Lua error at the script's line.
local FAIL, RETHROW, PENDING, overran = ...

local error, select, type, rawequal, rawget = error, select, type, rawequal, rawget
local getmetatable, raw_setmetatable, tointeger = getmetatable, setmetatable, math.tointeger
local raw_pcall, raw_xpcall = pcall, xpcall
local co = coroutine
local raw_resume, raw_yield, raw_status, raw_create, raw_close =
  co.resume, co.yield, co.status, co.create, co.close
local raw_insert, raw_remove, raw_date = table.insert, table.remove, os.date

-- Rust functions return FAIL, message (raise at the caller's line) or
-- RETHROW, value (re-raise a Lua error as it was).
local function check(a, ...)
  if rawequal(a, FAIL) then error((...), 2) end
  if rawequal(a, RETHROW) then error((...), 0) end
  return a, ...
end

local function wrap(f)
  return function(...) return check(f(...)) end
end

-- Once a run overran its budget nothing may catch that: the handler ends.
local function pass(ok, ...)
  if not ok and overran() then error((...), 0) end
  return ok, ...
end

pcall = function(f, ...)
  return pass(raw_pcall(f, ...))
end

xpcall = function(f, h, ...)
  if h == nil then error("bad argument #2 to 'xpcall' (value expected)", 2) end
  -- The message handler of an error raised by the budget hook runs with
  -- hooks off: it must not run script code then.
  return pass(raw_xpcall(f, function(e)
    if overran() then return e end
    return h(e)
  end, ...))
end

-- Coroutines that died of an error, with that error. Their pending
-- to-be-closed variables are never run: when the error came from the budget
-- hook they would run with hooks off.
local died = raw_setmetatable({}, { __mode = "k" })

local function resumed(c, ok, ...)
  if ok then
    if select("#", ...) == 1 and rawequal((...), PENDING) and raw_status(c) == "suspended" then
      -- The coroutine waits for the host (bot.sleep, ...): wait with it.
      return resumed(c, raw_resume(c, raw_yield(PENDING)))
    end
    return true, ...
  end
  died[c] = { (...) }
  if overran() then error((...), 0) end
  return false, ...
end

co.resume = function(c, ...)
  return resumed(c, raw_resume(c, ...))
end

local function unwrapped(ok, ...)
  if ok then return ... end
  error((...), 0)
end

co.wrap = function(f)
  local c = raw_create(f)
  return function(...)
    return unwrapped(resumed(c, raw_resume(c, ...)))
  end
end

co.close = function(c)
  local d = died[c]
  if d then return false, d[1] end
  if raw_status(c) == "dead" then return true end
  return pass(raw_close(c))
end

-- A table with a metatable may lie about its length: move its elements in
-- Lua, where the budget sees every step.
local function lied(t)
  return getmetatable(t) ~= nil
end

table.insert = function(t, ...)
  local n = select("#", ...)
  if type(t) ~= "table" or not lied(t) or n < 2 then return raw_insert(t, ...) end
  if n ~= 2 then error("wrong number of arguments to 'insert'", 2) end
  local e = #t + 1
  local pos, v = ...
  pos = tointeger(pos)
  if not pos then error("bad argument #2 to 'insert' (number has no integer representation)", 2) end
  if pos < 1 or pos > e then error("bad argument #2 to 'insert' (position out of bounds)", 2) end
  for i = e, pos + 1, -1 do t[i] = t[i - 1] end
  t[pos] = v
end

table.remove = function(t, ...)
  if type(t) ~= "table" or not lied(t) then return raw_remove(t, ...) end
  local size = #t
  local pos = size
  if select("#", ...) > 0 and (...) ~= nil then
    pos = tointeger((...))
    if not pos then error("bad argument #2 to 'remove' (number has no integer representation)", 2) end
  end
  if pos ~= size and (pos < 1 or pos > size + 1) then
    error("bad argument #2 to 'remove' (position out of bounds)", 2)
  end
  local v = t[pos]
  while pos < size do
    t[pos] = t[pos + 1]
    pos = pos + 1
  end
  t[pos] = nil
  return v
end

table.move = function(a1, f, e, t, a2)
  if a2 == nil then a2 = a1 end
  f, e, t = tointeger(f), tointeger(e), tointeger(t)
  if not (f and e and t) then error("bad argument to 'move' (number has no integer representation)", 2) end
  if e >= f then
    if not (f > 0 or e < math.maxinteger + f) then error("bad argument #3 to 'move' (too many elements to move)", 2) end
    if t > math.maxinteger - (e - f) then error("bad argument #4 to 'move' (destination wrap around)", 2) end
    if t > e or t <= f or not rawequal(a1, a2) then
      for i = 0, e - f do a2[t + i] = a1[f + i] end
    else
      for i = e - f, 0, -1 do a2[t + i] = a1[f + i] end
    end
  end
  return a2
end

-- strftime runs once per conversion in C: keep formats short.
os.date = function(fmt, ...)
  if type(fmt) == "string" and #fmt > 256 then
    error("bad argument #1 to 'date' (format longer than 256 bytes)", 2)
  end
  return raw_date(fmt, ...)
end

-- Finalizers run with hooks off (Lua 5.4 disables them inside __gc), so a
-- __gc loop would escape the budget: refuse such metatables. A metatable
-- only becomes a finalizer when set with __gc present, so checking here is
-- enough.
setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not allowed in moonwire scripts", 2)
  end
  return raw_setmetatable(t, mt)
end

getmetatable("").__metatable = false
string.dump = nil

return { check = check, wrap = wrap, raw_pcall = raw_pcall }

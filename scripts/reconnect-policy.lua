-- reconnect-policy.lua: decide what happens after the connection closes.
--
-- Safe to leave loaded: as shipped it only logs and returns nil, which keeps
-- moonwire's defaults (see the table in README.md). To change the policy,
-- uncomment one of the alternatives below.
--
-- What on_close may return:
--   nil                            keep the default for this reason
--   false                          stay closed (`/connect` or a restart opens again)
--   true                           reconnect after the default backoff delay
--   a number                       reconnect after that many milliseconds
--   {reconnect = bool, delay_ms = n}  the same, spelled out
--
-- The first script (in file name order) that returns non-nil decides.
--
-- Some reasons ignore the answer, whatever it is:
--   515 restart_required   always reconnects at once (normal after pairing)
--   405 client_outdated    always stays closed
--   401 / 403 / 406        logged out: the session is deleted, nothing to resume
-- And however you answer, moonwire never starts more than
-- [reconnect] max_per_minute attempts in a minute.

---@param r moonwire.Close
function on_close(r)
  -- r.code is nil for transport errors (DNS, refused, TLS); r.delay_ms is nil
  -- when the default is to stay closed. %s prints nil and booleans as is.
  bot.log.info(string.format("closed: code=%s kind=%s attempt=%s will_reconnect=%s delay_ms=%s",
    r.code, r.kind, r.attempt, r.will_reconnect, r.delay_ms))

  -- 440 replaced: another client (e.g. WhatsApp Web) took the session.
  -- The default already stays closed, because reconnecting would take it back
  -- and the two clients would kick each other out forever. Returning false
  -- here makes that final even if a later script would reconnect.
  --
  -- if r.kind == "replaced" then
  --   return false
  -- end

  -- 503 service_unavailable: WhatsApp is having trouble; wait 30 s instead
  -- of the short default backoff so we don't add to the load.
  --
  -- if r.code == 503 then
  --   return 30000
  -- end

  -- Give up after 10 attempts in a row. r.attempt counts the attempts since
  -- the connection was last stable (open for [reconnect] stable_ms); it
  -- starts again at 1 after that.
  --
  -- local MAX_ATTEMPTS = 10
  -- if r.will_reconnect and r.attempt >= MAX_ATTEMPTS then
  --   bot.log.warn("giving up after", r.attempt, "attempts")
  --   return false
  -- end

  -- Network errors: retry at a steady 5 s instead of an exponential backoff
  -- (the table form is the same as returning 5000).
  --
  -- if r.kind == "transport_error" then
  --   return { reconnect = true, delay_ms = 5000 }
  -- end

  return nil -- keep the defaults
end

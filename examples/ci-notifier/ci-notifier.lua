-- ci-notifier.lua: GitHub tells the bot when a workflow run finishes; the
-- bot checks the call's signature and posts failures (and the fix that
-- follows) to a group.
--
-- Set up:
--   1. Put the group's JID and a long random secret below.
--   2. On GitHub: Settings > Webhooks > Add webhook. Payload URL
--      https://<your host>/v1/instances/<instance>/hooks/ci, content type
--      application/json, the same secret, the event "Workflow runs".
--
-- The route is public (GitHub has no moonwire key): the HMAC signature in
-- X-Hub-Signature-256 is what proves a call came from GitHub. With the
-- secret left empty every call is refused.

local GROUP = "120363000000000000@g.us" -- where to post
local SECRET = ""                        -- the webhook's secret

local function signed(req)
  if SECRET == "" then return false end
  local want = "sha256=" .. bot.crypto.hmac_sha256(SECRET, req.body)
  -- Constant time: a forger learns nothing from how long a "no" takes.
  return bot.crypto.equal(req.headers["x-hub-signature-256"] or "", want)
end

-- Which workflows are failing now, by "repo workflow branch", so a green
-- run after a red one says "fixed" and other green runs say nothing.
local function failing() return bot.store.get("failing") or {} end

local function describe(payload)
  local run = payload.workflow_run
  local repo = type(payload.repository) == "table" and payload.repository.full_name or "?"
  local sha = type(run.head_sha) == "string" and run.head_sha:sub(1, 7) or "?"
  return repo, tostring(run.name or "?"), tostring(run.head_branch or "?"), sha
end

bot.route("POST", "/ci", function(req)
  if not signed(req) then
    bot.log.warn("ci: refused a call without a valid signature")
    return { status = 401, body = "bad signature" }
  end
  local event = req.headers["x-github-event"]
  if event == "ping" then return "pong" end
  if event ~= "workflow_run" then return { status = 202, body = "ignored" } end
  local payload = bot.json.decode(req.body)
  if type(payload) ~= "table" or type(payload.workflow_run) ~= "table" then
    return { status = 400, body = "expected a workflow_run payload" }
  end
  if payload.action ~= "completed" then return { status = 202, body = "ignored" } end

  local repo, name, branch, sha = describe(payload)
  local key = repo .. " " .. name .. " " .. branch
  local url = payload.workflow_run.html_url or ""
  local list = failing()
  local text
  local conclusion = payload.workflow_run.conclusion
  if conclusion == "failure" or conclusion == "timed_out" then
    text = string.format("❌ %s: %s failed on %s (%s) %s", repo, name, branch, sha, url)
    list[key] = true
  elseif conclusion == "success" and list[key] then
    text = string.format("✅ %s: %s is green again on %s (%s)", repo, name, branch, sha)
    list[key] = nil
  end
  bot.store.set("failing", next(list) and list or nil)
  if not text then return { status = 202, body = "nothing to say" } end
  local id, err = bot.send(GROUP, text)
  if not id then return { status = 503, body = "not posted: " .. err } end
  return { status = 202, body = "posted" }
end, { public = true })

---@meta
-- Definitions of moonwire's Lua API for lua-language-server (LuaLS):
-- completion, hover docs and type checks while writing scripts.
-- This file is never loaded by moonwire; .luarc.json at the repo root points
-- LuaLS here. README.md (Scripts) describes the same API in prose.

---@alias moonwire.State
---| "idle"
---| "connecting"
---| "pairing"
---| "open"
---| "reconnecting"
---| "closed"
---| "logging_out"
---| "logged_out"

---A value bot.store and bot.json can hold: JSON, exactly. Tables are lists
---(keys 1..n, no holes) or have string keys only, never both; numbers are
---finite; strings are UTF-8; nesting is at most 64 deep; no functions,
---userdata or cycles. Anything else is refused with an error saying why.
---@alias moonwire.Json nil|boolean|number|string|table

---The message type a moonwire.Message has.
---@alias moonwire.MessageType
---| "text"
---| "image"
---| "video"
---| "audio"
---| "document"
---| "sticker"
---| "location"
---| "contact"
---| "poll"
---| "poll_vote"
---| "reaction"
---| "edit"
---| "revoke"
---| "unknown"

---The media of a message (metadata: the bytes come with m:download()).
---@class moonwire.Media
---@field kind "image"|"video"|"audio"|"document"|"sticker"
---@field mime? string e.g. "image/jpeg"
---@field size? integer bytes, as the sender declared them
---@field file_name? string documents (and console files)
---@field seconds? integer length of audio and video
---@field voice boolean an audio message recorded as a voice note
---@field width? integer
---@field height? integer

---The message a reply quotes.
---@class moonwire.Quoted
---@field id string
---@field sender? string
---@field text? string
---@field type? string

---@class moonwire.Location
---@field lat number
---@field lng number
---@field name? string

---@class moonwire.Poll
---@field name string
---@field options string[]
---@field selectable integer how many options a voter may pick (0: any number)

---An incoming (or own) message. Read-only and shared by every handler of
---the message: assigning a field is an error (copy into a table instead).
---@class moonwire.Message
---@field id string message id
---@field chat string JID of the chat it was sent in (reply there)
---@field sender string JID of who sent it (in a group, the member)
---@field text? string the text, or a media caption; nil if the message has none
---@field type moonwire.MessageType
---@field from_me boolean sent by this account (e.g. from your phone)
---@field is_group boolean the chat is a group
---@field push_name? string the sender's display name, if known
---@field timestamp integer when it was sent, unix seconds
---@field mentions string[] JIDs mentioned in it (empty if none)
---@field quoted? moonwire.Quoted the message this one replies to
---@field media? moonwire.Media
---@field target? string the id a reaction, edit, revoke or poll vote is about
---@field reaction? string a reaction's emoji ("" = the reaction was removed)
---@field location? moonwire.Location
---@field poll? moonwire.Poll a poll's question and options
---@field votes string[] a poll vote's selected options (empty otherwise)
local Message = {}

---Answers in the message's chat, quoting it (unless the content gives
---another `quote`); queued like `bot.send` while reconnecting.
---@param content moonwire.Content
---@return string? id the id of the sent message
---@return string? err why it was not sent: "not open", or what is wrong with the content
function Message:reply(content) end

---Reacts to the message with an emoji ("" removes the reaction).
---@param emoji string
---@return string? id
---@return string? err
function Message:react(emoji) end

---Sends a read receipt for the message (blue ticks).
---@return boolean? ok
---@return string? err e.g. "not open"
function Message:read() end

---Waits: fetches the message's media (decrypted and its hash checked on
---WhatsApp), saves it under the data dir's media/<instance>/ and returns
---the path. Refused beyond [script] max_media_mb (default 64).
---@return string? path
---@return string? err e.g. "this message has no media to download"
function Message:download() end

---Media to send: a path relative to the scripts folder or the data dir's
---media/ folder (nothing else is readable: `../`, other absolute paths and
---symlinks that lead out are refused), or the bytes themselves.
---@alias moonwire.MediaSource string|{data: string, mime?: string, file_name?: string}

---What bot.send and m:reply take: a string is a text message; a table
---carries one body (text, one media key, a location or a poll) and
---optionally mentions and a quote. Invalid content (two media keys, an
---unknown key, a poll with one option, a missing file, ...) is refused with
---nil and a message naming the problem.
---@class moonwire.ContentTable
---@field text? string
---@field image? moonwire.MediaSource
---@field video? moonwire.MediaSource
---@field audio? moonwire.MediaSource
---@field document? moonwire.MediaSource
---@field sticker? moonwire.MediaSource
---@field caption? string a media file's caption (`text` works too)
---@field file_name? string the name a document is shown with
---@field mime? string the media type (default: from the file name, else the kind's usual type)
---@field voice? boolean audio as a voice note
---@field mentions? string[] JIDs or phone numbers mentioned
---@field quote? string the id of a message to quote
---@field location? moonwire.Location
---@field poll? {name: string, options: string[], selectable?: integer} 2 to 12 options; selectable defaults to 1, 0 is any number

---@alias moonwire.Content string|moonwire.ContentTable

---Receipts for messages the bot sent (`on_receipt`).
---@class moonwire.Receipt
---@field chat string
---@field ids string[] the message ids
---@field sender string who read (or got, or played) them
---@field kind "delivered"|"read"|"played"

---A change to a group (`on_group`). Members are named by phone-number JID
---when known, by LID (`...@lid`) otherwise, as everywhere else.
---@class moonwire.GroupEvent
---@field chat string the group, "...@g.us"
---@field action "add"|"remove"|"promote"|"demote"|"subject"|"description"|"announce"|"locked"|"create"
---@field participants string[] who was added, removed, promoted or demoted (for "create": the members)
---@field by? string who did it, when known
---@field value? string the new subject or description; "on"/"off" for announce and locked

---One member of a group.
---@class moonwire.GroupParticipant
---@field jid string phone-number JID when known, else the LID
---@field admin boolean an admin (super admins too)
---@field super_admin boolean the group's creator

---A group's metadata (`bot.groups.info`).
---@class moonwire.GroupInfo
---@field jid string
---@field subject string
---@field description? string
---@field owner? string who created the group
---@field announce boolean only admins may send
---@field locked boolean only admins may edit the group's info
---@field participants moonwire.GroupParticipant[]

---Groups: every call waits (only the calling handler). Failures are nil and
---the server's reason ("403 forbidden", "404 item-not-found", ...). `info` is
---answered from the instance's memory while fresh (5 min; group events keep
---it true).
---@class moonwire.Groups
local Groups = {}

---@param jid string a group, "...@g.us"
---@return moonwire.GroupInfo? info
---@return string? err
function Groups.info(jid) end

---The groups this account is in.
---@return moonwire.GroupInfo[]? groups
---@return string? err
function Groups.list() end

---true when every user was added; else nil and, per user that was not, why.
---@param jid string
---@param users string|string[] JIDs or phone numbers
---@return true? ok
---@return string? err
function Groups.add(jid, users) end

---@param jid string
---@param users string|string[]
---@return true? ok
---@return string? err
function Groups.remove(jid, users) end

---@param jid string
---@param users string|string[]
---@return true? ok
---@return string? err
function Groups.promote(jid, users) end

---@param jid string
---@param users string|string[]
---@return true? ok
---@return string? err
function Groups.demote(jid, users) end

---The group's invite link (the bot must be an admin).
---@param jid string
---@return string? link "https://chat.whatsapp.com/..."
---@return string? err
function Groups.invite_link(jid) end

---@param jid string
---@param subject string 1 to 100 characters
---@return true? ok
---@return string? err
function Groups.set_subject(jid, subject) end

---@param jid string
---@return true? ok
---@return string? err
function Groups.leave(jid) end

---A pairing code to show the user (`on_qr`).
---@class moonwire.Qr
---@field code string the QR payload, or the 8-character pairing code
---@field kind "qr"|"pair_code"
---@field expires_in integer seconds until this code expires

---The connection is open (`on_open`).
---@class moonwire.Session
---@field instance string the instance name
---@field jid? string this account's JID; may not be known yet
---@field push_name? string this account's display name

---The connection closed (`on_close`).
---@class moonwire.Close
---@field code? integer close code (e.g. 408, 440, 503); nil for transport errors
---@field kind string reason: "connection_lost", "replaced", "transport_error", …
---@field message? string detail text, for logs
---@field attempt integer the attempt about to be made since the connection was last stable (open for [reconnect] stable_ms): 1, 2, 3, … while it keeps failing, also when each try opens briefly; the backoff counter, shown as attempt= in the state lines
---@field will_reconnect boolean what moonwire does if the script returns nil
---@field delay_ms? integer the default delay before reconnecting; nil if it won't

---What `on_close` may return:
---`nil` keeps the default, `false` stays closed, `true` reconnects after the
---default delay, a number reconnects after that many ms, a table spells it out.
---Ignored for 515, 405, 401, 403 and 406.
---@alias moonwire.CloseAnswer nil|boolean|integer|{reconnect?: boolean, delay_ms?: integer}

---The session ended (`on_logout`); its data has been deleted.
---@class moonwire.Logout
---@field code? integer close code, e.g. 401
---@field kind string reason, e.g. "logged_out"
---@field by "user"|"server"|"script" who asked for it

---A timer from bot.after or bot.every.
---@class moonwire.Timer
local Timer = {}

---Stops the timer: a cancelled `after` never fires, a cancelled `every` fires no more.
function Timer:cancel() end

---A schedule from bot.cron.
---@class moonwire.Cron
local Cron = {}

---Stops the schedule; it runs no more. True if it was still running.
---@return boolean
function Cron:cancel() end

---When it runs next, in unix seconds; nil once cancelled (or if never again).
---@return integer?
function Cron:next() end

---Options of bot.cron.
---@class moonwire.CronOptions
---@field tz? string an IANA time zone such as "Europe/Berlin" (default: [script] timezone, else the system's)
---@field catch_up? boolean run once at start if a run was missed while the bot was down (default false)

---What bot.http.request takes.
---@class moonwire.HttpRequest
---@field url string http:// or https://
---@field method? string "GET" (default), "POST", "PUT", "PATCH", "DELETE", ...
---@field headers? table<string, string|number>
---@field body? string
---@field timeout_ms? number at most [script.http] timeout_ms (also the default)

---Options of bot.http.get and bot.http.post.
---@class moonwire.HttpOptions
---@field headers? table<string, string|number>
---@field timeout_ms? number

---What the server answered (any status: a 404 is an answer).
---@class moonwire.HttpResponse
---@field status integer
---@field headers table<string, string> lowercase names; a repeated header's values joined with ", "
---@field body string the body's bytes

---Outbound HTTP, guarded by [script.http]. Each call waits (only the calling
---handler) and returns the answer, or nil and why not (refused address,
---timeout, body over the limit, ...).
---@class moonwire.Http
local Http = {}

---@param req moonwire.HttpRequest
---@return moonwire.HttpResponse? response
---@return string? err
function Http.request(req) end

---@param url string
---@param opts? moonwire.HttpOptions
---@return moonwire.HttpResponse? response
---@return string? err
function Http.get(url, opts) end

---@param url string
---@param body string
---@param opts? moonwire.HttpOptions
---@return moonwire.HttpResponse? response
---@return string? err
function Http.post(url, body, opts) end

---A call to one of the script's routes.
---@class moonwire.RouteRequest
---@field method string "GET", "POST", ...
---@field path string the route's path, e.g. "/ci"
---@field query table<string, string> decoded; of a repeated name the first value
---@field headers table<string, string> lowercase names; repeated ones joined with ", " (no Authorization on a non-public route)
---@field body string the body's bytes (at most 64 KiB)

---A route handler's answer: a table, a string (200, text/plain) or nil (204).
---@alias moonwire.RouteAnswer {status?: integer, headers?: table<string, string|number|string[]>, body?: string}|string|nil

---Options of bot.route.
---@class moonwire.RouteOptions
---(The first `public` is LuaLS's visibility keyword, the second the option.)
---@field public public? boolean serve it without the admin key or the instance's token (check a signature instead)

---Signature helpers, for routes that services call.
---@class moonwire.Crypto
local Crypto = {}

---HMAC-SHA256 of `data` under `key`, as lowercase hex (GitHub's
---X-Hub-Signature-256 is "sha256=" .. this).
---@param key string
---@param data string
---@return string
function Crypto.hmac_sha256(key, data) end

---Whether two strings are equal, in time that does not depend on where they
---differ: compare signatures with this, not ==.
---@param a string
---@param b string
---@return boolean
function Crypto.equal(a, b) end

---The words after a command: `!remind 10m buy milk` gives
---`{ "10m", "buy", "milk", text = "10m buy milk" }`.
---@class moonwire.CommandArgs
---@field [integer] string the whitespace-separated words
---@field text string the rest of the line after the command name, trimmed ("" if none)

---@class moonwire.CommandInfo
---@field name string without the prefix
---@field description? string

---A script's own key-value store, kept in SQLite: survives reloads and restarts.
---@class moonwire.Store
local Store = {}

---@param key string
---@return moonwire.Json value nil if the key is not set
function Store.get(key) end

---Stores a JSON value; `set(key, nil)` deletes the key. A value JSON cannot
---hold exactly raises an error naming the problem, and nothing is stored.
---@param key string
---@param value moonwire.Json
function Store.set(key, value) end

---@param key string
function Store.delete(key) end

---JSON text, with the same exact conversion as bot.store.
---@class moonwire.JsonLib
local JsonLib = {}

---@param value moonwire.Json
---@return string? text
---@return string? err why the value cannot be encoded
function JsonLib.encode(value) end

---JSON `null` is nil (so `[1, null]` has a hole).
---@param text string
---@return moonwire.Json value
---@return string? err invalid JSON, or nested deeper than 64
function JsonLib.decode(text) end

---Logging; the arguments are joined with spaces (each through tostring).
---@class moonwire.Log
local Log = {}
---@param ... any
function Log.debug(...) end
---@param ... any
function Log.info(...) end
---@param ... any
function Log.warn(...) end
---@param ... any
function Log.error(...) end

---The moonwire API.
---@class moonwire.Bot
---@field instance string the instance name, e.g. "default" or "console"
---@field prefix string the command prefix ("!" unless [script] command_prefix says otherwise)
---@field store moonwire.Store
---@field json moonwire.JsonLib
---@field log moonwire.Log
---@field http moonwire.Http
---@field crypto moonwire.Crypto
---@field groups moonwire.Groups
bot = {}

---The lifecycle state of the instance.
---@return moonwire.State
function bot.state() end

---Sends a message: a text, or a content table (media, location, poll,
---mentions, quote). Returns at once; the send (and any upload) goes on.
---While connecting or reconnecting it waits in the outbox and goes out
---after the open, under the id answered now; a send that finally fails is
---reported as a `send_failed` event.
---@param chat string JID of the chat, or a phone number ("15551234567", "+15551234567")
---@param content moonwire.Content
---@return string? id the message id, or nil
---@return string? err "not open" (closed, pairing, logged out), why `chat` is no recipient, or what is wrong with the content
function bot.send(chat, content) end

---Replaces the text of a message the bot sent.
---@param chat string
---@param id string the id bot.send returned
---@param text string
---@return string? id the id of the edit
---@return string? err
function bot.edit(chat, id, text) end

---Deletes a message the bot sent, for everyone.
---@param chat string
---@param id string
---@return string? id the id of the revoke
---@return string? err
function bot.revoke(chat, id) end

---Shows (or with `on = false` stops) "typing..." in a chat.
---@param chat string
---@param on? boolean default true
---@return boolean? ok
---@return string? err e.g. "not open"
function bot.typing(chat, on) end

---Waits `ms` milliseconds. Only the calling handler waits: the bot answers
---other messages meanwhile. Call it from a handler (a hook, command, hear,
---timer, cron or route function), not from a file's top level.
---@param ms number
function bot.sleep(ms) end

---Handles `<prefix><name>` (prefix "!" by default, `[script] command_prefix`).
---@param name string the command without its prefix
---@param fn fun(m: moonwire.Message, args: moonwire.CommandArgs)
---@param description? string shown by `!help`
function bot.command(name, fn, description) end

---Every command that any script registered, sorted by name.
---@return moonwire.CommandInfo[]
function bot.commands() end

---Calls `fn` for every text message where `string.match(m.text, pattern)`
---matches, with the captures (or the whole match) after the message.
---@param pattern string a Lua pattern
---@param fn fun(m: moonwire.Message, ...: string)
function bot.hear(pattern, fn) end

---Calls `fn` once after `ms` milliseconds.
---@param ms integer
---@param fn fun()
---@return moonwire.Timer
function bot.after(ms, fn) end

---Calls `fn` every `ms` milliseconds until cancelled.
---@param ms integer
---@param fn fun()
---@return moonwire.Timer
function bot.every(ms, fn) end

---Calls `fn` on a cron schedule: five fields, minute hour day-of-month
---month day-of-week ("0 8 * * 1-5": 8:00 Monday to Friday), with ranges,
---steps, lists and names, or "@daily"-style aliases. A bad spec or zone is
---a load error at this line. Ends with the scripts' generation.
---@param spec string
---@param fn fun()
---@param opts? moonwire.CronOptions
---@return moonwire.Cron
function bot.cron(spec, fn, opts) end

---Serves `fn` at /v1/instances/<instance>/hooks<path>. Call it while the
---scripts load (at a script's top level); two scripts registering the same
---method and path is a load error. Errors in `fn` are a bare 500 to the
---caller (the details go to the log); past the handler deadline, 504.
---@param method "GET"|"POST"|"PUT"|"PATCH"|"DELETE"
---@param path string e.g. "/ci"
---@param fn fun(req: moonwire.RouteRequest): moonwire.RouteAnswer
---@param opts? moonwire.RouteOptions
function bot.route(method, path, fn, opts) end

---Logs out: unlinks this device and deletes the session (`on_logout` with by = "script").
function bot.logout() end

-- Hooks: global functions a script may define. Each call runs in its own
-- coroutine: it may wait (bot.sleep) without holding up other handlers.
-- Each run between waits has a CPU budget ([script] hook_timeout_ms) that
-- pcall cannot catch; a handler's whole life has a deadline
-- ([script] handler_deadline_ms).

---Called on every (re)load of the scripts folder, after all files compiled.
---@type fun()|nil
on_load = nil

---Called before this generation is replaced by a reload, and at shutdown.
---@type fun()|nil
on_unload = nil

---A pairing code to show (QR or phone pairing code).
---@type fun(p: moonwire.Qr)|nil
on_qr = nil

---The connection is open. Not called again by a reload.
---@type fun(s: moonwire.Session)|nil
on_open = nil

---The connection closed. The first script (in file name order) that returns
---non-nil decides what happens next.
---@type (fun(r: moonwire.Close): moonwire.CloseAnswer)|nil
on_close = nil

---The session ended and its data was deleted.
---@type fun(i: moonwire.Logout)|nil
on_logout = nil

---Called for every incoming message.
---@type fun(m: moonwire.Message)|nil
on_message = nil

---A group changed: members added, removed, promoted, demoted; the subject,
---description or settings; a group was created with the bot in it.
---@type fun(e: moonwire.GroupEvent)|nil
on_group = nil

---Receipts (delivered, read, played) for messages the bot sent.
---@type fun(r: moonwire.Receipt)|nil
on_receipt = nil

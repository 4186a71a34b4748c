// Side by side: moonwire (N WhatsApp instances in one `moonwire run`, a Lua
// echo script) and Baileys (N sockets in one Node process, a JS echo
// handler), each against its own mock server process with N accounts.
// Measured per client process, from /proc: the time from its start until
// all N are open, its RSS after `--idle` seconds open and quiet, and an echo
// run (each account's contact sends `--m` messages; the replies are counted
// at the mock) with the process's CPU time. Prints one table per N with
// both rows and the ratios (Baileys ÷ moonwire).
//
// node tests/peer/bench.mjs [--n 10,100] [--m 20] [--idle 30]
// Builds the release binaries first (cargo build --release --example
// mock_server --example moonwire_mock) unless MOCK_SERVER and MOONWIRE_MOCK
// name them. Linux only (/proc).
import { execFileSync, fork, spawn } from 'node:child_process'
import { mkdtempSync, openSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

import { ROOT, startMock } from './mock.mjs'

const { values: opts } = parseArgs({
  options: {
    n: { type: 'string', default: '10,100' },
    m: { type: 'string', default: '20' },
    idle: { type: 'string', default: '30' }
  }
})
const SIZES = opts.n.split(',').map(Number)
const M = Number(opts.m)
const IDLE_MS = Number(opts.idle) * 1000
const OPEN_TIMEOUT_MS = 300000
const ECHO_TIMEOUT_MS = 600000
const TICK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const log = (...a) => console.error('bench:', ...a)

function binaries () {
  let mock = process.env.MOCK_SERVER
  let moonwire = process.env.MOONWIRE_MOCK
  if (!mock || !moonwire) {
    log('building the release binaries (cargo build --release --example mock_server --example moonwire_mock)')
    execFileSync('cargo', ['build', '--release', '--example', 'mock_server', '--example', 'moonwire_mock'],
      { cwd: ROOT, stdio: 'inherit' })
    mock ??= join(ROOT, 'target/release/examples/mock_server')
    moonwire ??= join(ROOT, 'target/release/examples/moonwire_mock')
  }
  return { mock, moonwire }
}

/** A process's resident set (kB) and CPU time so far (s, user + system). */
function usage (pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)[1])
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const cpu = (Number(fields[11]) + Number(fields[12])) / TICK
  return { rssKb, cpu }
}

function freePort () {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/** The contact who writes to account `k`. */
const contactOf = k => String(15550000000 + k)

/**
 * The part both rows share once the client is running: has the mock's phone
 * scan each QR as its account, waits until all N are open, idles, then
 * runs the echo. `client` gives `pid`, `onQr(cb(k, code))`, `opened()` (a
 * Set of open k) and `stop()`.
 */
async function measure (mock, n, client, started) {
  const scanned = new Set()
  client.onQr((k, code) => {
    if (scanned.has(code)) return
    scanned.add(code)
    mock.cmd({ cmd: 'scan', qr: code, account: k }).catch(e => log(`scan ${k}: ${e.message}`))
  })
  const deadline = Date.now() + OPEN_TIMEOUT_MS
  while (client.opened().size < n) {
    if (Date.now() > deadline) throw new Error(`only ${client.opened().size} of ${n} opened`)
    await sleep(20)
  }
  const openS = (Date.now() - started) / 1000
  const atOpen = usage(client.pid)
  await client.settled?.()
  await sleep(IDLE_MS)
  const idle = usage(client.pid)
  const pairs = Array.from({ length: n }, (_, k) => [k, contactOf(k)])
  const before = usage(client.pid)
  const { messages_to_contacts: already } = await mock.cmd({ cmd: 'counters' })
  const t0 = Date.now()
  await mock.cmd({ cmd: 'burst', pairs, count: M, text: 'ping' })
  const want = already + n * M
  const done = await mock.send({ cmd: 'wait', cond: 'messages_to_contacts', n: want, timeout_ms: ECHO_TIMEOUT_MS })
  if (!done.ok) throw new Error(`echo: ${done.error}`)
  const echoS = (Date.now() - t0) / 1000
  const after = usage(client.pid)
  // The replies are the echoes: how many the contacts can read.
  let decrypted = 0
  const failures = []
  for (let k = 0; k < n; k++) {
    const { texts, undecryptable } = await mock.cmd({ cmd: 'deliver_to', contact: contactOf(k) })
    decrypted += texts.filter(t => t?.startsWith('ping ')).length
    failures.push(...undecryptable)
  }
  if (failures.length) log(`${failures.length} replies undecryptable, e.g. ${failures[0]}`)
  return {
    decrypted,
    n,
    openS,
    openCpu: atOpen.cpu,
    rssMb: idle.rssKb / 1024,
    perInstanceMb: idle.rssKb / 1024 / n,
    echoS,
    repliesPerS: (n * M) / echoS,
    echoCpu: after.cpu - before.cpu,
    cpuPerReplyMs: ((after.cpu - before.cpu) * 1000) / (n * M)
  }
}

/** moonwire: one `run` with N instances, QRs and states from its API (SSE). */
async function moonwireRow (bins, n) {
  const mock = await startMock([], bins.mock)
  const dir = mkdtempSync(join(tmpdir(), 'moonwire-bench-'))
  mkdirSync(join(dir, 'scripts'))
  writeFileSync(join(dir, 'scripts', 'echo.lua'), `-- Every text a contact sends comes back as a reply quoting it.
function on_message(m)
  if not m.from_me and m.text then m:reply(m.text) end
end
`)
  const port = await freePort()
  const instances = Array.from({ length: n }, (_, k) => `[[instance]]\nname = "b${k}"\nchannel = "whatsapp"\n`).join('\n')
  writeFileSync(join(dir, 'moonwire.toml'), `data_dir = "${dir}/data"
scripts = "${dir}/scripts"

${instances}
[whatsapp]
url = "${mock.url}"
version = "2.3000.1027934701"

[api]
listen = "127.0.0.1:${port}"
key = "bench"

[log]
level = "warn"
`)
  const logFd = openSync(join(dir, 'moonwire.log'), 'w')
  const started = Date.now()
  const child = spawn(bins.moonwire, ['run', '--config', join(dir, 'moonwire.toml')],
    { stdio: ['ignore', logFd, logFd] })
  const base = `http://127.0.0.1:${port}`
  const headers = { Authorization: 'Bearer bench' }
  for (;;) {
    if (child.exitCode !== null) throw new Error(`moonwire exited ${child.exitCode}; see ${dir}/moonwire.log`)
    if (await fetch(`${base}/healthz`).then(r => r.ok, () => false)) break
    await sleep(20)
  }
  const opened = new Set()
  let qrCb = () => {}
  const ac = new AbortController()
  const events = await fetch(`${base}/v1/events`, { headers, signal: ac.signal })
  ;(async () => {
    const decoder = new TextDecoder()
    let buf = ''
    for await (const chunk of events.body) {
      buf += decoder.decode(chunk, { stream: true })
      let end
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end)
        buf = buf.slice(end + 2)
        const data = block.split('\n').find(l => l.startsWith('data:'))
        if (!data) continue
        const ev = JSON.parse(data.slice(5))
        const k = Number(String(ev.instance).slice(1))
        if (ev.type === 'qr') qrCb(k, ev.code)
        if (ev.type === 'state' && ev.state === 'open') opened.add(k)
      }
    }
  })().catch(() => {})
  // QRs shown before the event stream was up.
  const sweep = async () => {
    for (let k = 0; k < n; k++) {
      if (opened.has(k)) continue
      const r = await fetch(`${base}/v1/instances/b${k}/qr`, { headers }).catch(() => null)
      if (r?.ok) qrCb(k, (await r.json()).code)
    }
  }
  const sweeper = setInterval(() => sweep().catch(() => {}), 2000)
  try {
    return await measure(mock, n, {
      pid: child.pid,
      onQr: cb => { qrCb = cb; sweep().catch(() => {}) },
      opened: () => opened,
      settled: () => { clearInterval(sweeper); ac.abort() }
    }, started)
  } finally {
    clearInterval(sweeper)
    ac.abort()
    child.kill('SIGTERM')
    await new Promise(resolve => child.exitCode !== null ? resolve() : child.once('exit', resolve))
    await mock.stop()
  }
}

/** Baileys: N sockets in one forked Node process. */
async function baileysRow (bins, n) {
  const mock = await startMock([], bins.mock)
  const started = Date.now()
  const child = fork(join(ROOT, 'tests/peer/bench-baileys.mjs'), [mock.url, mock.certRoot.toString('hex'), String(n)],
    { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const opened = new Set()
  let qrCb = () => {}
  const early = []
  child.on('message', msg => {
    if (msg.qr) {
      early.push([msg.i, msg.qr])
      qrCb(msg.i, msg.qr)
    }
    if (msg.open !== undefined) opened.add(msg.open)
    if (msg.closed !== undefined) log(`baileys ${msg.closed} closed: ${msg.code}`)
    if (msg.error) log(`baileys ${msg.error}`)
  })
  try {
    return await measure(mock, n, {
      pid: child.pid,
      onQr: cb => { qrCb = cb; for (const [k, code] of early) cb(k, code) },
      opened: () => opened
    }, started)
  } finally {
    child.kill('SIGTERM')
    await new Promise(resolve => child.exitCode !== null ? resolve() : child.once('exit', resolve))
    await mock.stop()
  }
}

const COLUMNS = [
  ['all open (s)', r => r.openS, 1],
  ['CPU to open (s)', r => r.openCpu, 2],
  [`RSS after ${opts.idle} s idle (MiB)`, r => r.rssMb, 1],
  ['RSS / instance (MiB)', r => r.perInstanceMb, 2],
  [`echo ${M}×N (s)`, r => r.echoS, 2],
  ['replies/s', r => r.repliesPerS, 0],
  ['CPU in echo (s)', r => r.echoCpu, 2],
  ['CPU / reply (ms)', r => r.cpuPerReplyMs, 3],
  ['replies the contacts decrypt', r => r.decrypted, 0]
]

function table (n, mw, bl) {
  const row = (name, cells) => `| ${name} | ${cells.join(' | ')} |`
  const lines = [
    `N = ${n} (M = ${M} messages per contact; Node ${process.versions.node}; ${new Date().toISOString().slice(0, 10)})`,
    '',
    row('client', COLUMNS.map(c => c[0])),
    row('---', COLUMNS.map(() => '---:')),
    row('moonwire', COLUMNS.map(([, f, d]) => f(mw).toFixed(d))),
    row('Baileys 7.0.0-rc14', COLUMNS.map(([, f, d]) => f(bl).toFixed(d))),
    row('Baileys ÷ moonwire', COLUMNS.map(([, f]) => `${(f(bl) / f(mw)).toFixed(2)}×`))
  ]
  return lines.join('\n')
}

const bins = binaries()
const rows = []
for (const n of SIZES) {
  log(`N = ${n}: moonwire`)
  const mw = await moonwireRow(bins, n)
  log(`N = ${n}: Baileys`)
  const bl = await baileysRow(bins, n)
  rows.push([mw, bl])
  console.log(table(n, mw, bl) + '\n')
}
// What one more open instance costs, between the smallest and largest N.
if (rows.length > 1) {
  const [a, b] = [rows[0], rows[rows.length - 1]]
  const marginal = i => (b[i].rssMb - a[i].rssMb) / (b[i].n - a[i].n)
  const [mw, bl] = [marginal(0), marginal(1)]
  console.log(`RSS per additional open instance (N ${a[0].n} → ${b[0].n}): ` +
    `moonwire ${mw.toFixed(2)} MiB, Baileys ${bl.toFixed(2)} MiB (${(bl / mw).toFixed(2)}×)`)
}
process.exit(0)

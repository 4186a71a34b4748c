// An unmodified Baileys socket against the mock, and the waits a test or
// the benchmark needs around it. The only thing set at run time is the cert
// root Baileys checks the server's chain against (WA_CERT_DETAILS.PUBLIC_KEY),
// which must be the mock's own.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import makeWASocket, { makeCacheableSignalKeyStore, useMultiFileAuthState, WA_CERT_DETAILS } from 'baileys'
import pino from 'pino'

// libsignal (under Baileys) prints every closed session with console.info;
// keep it out of the test output unless logs are asked for.
if (!process.env.PEER_LOG) console.info = () => {}

export const logger = pino({ level: process.env.PEER_LOG || 'silent' }, pino.destination(2))

/** Points Baileys at the mock's cert root. */
export function trustMock (mock) {
  WA_CERT_DETAILS.PUBLIC_KEY = mock.certRoot
}

/** A fresh auth folder (Baileys' own multi-file auth state) in a temp dir. */
export async function freshAuth () {
  const dir = mkdtempSync(join(tmpdir(), 'moonwire-peer-'))
  const { state, saveCreds } = await useMultiFileAuthState(dir)
  return { dir, state, saveCreds }
}

/** A socket's `auth`: the creds, and the keys behind Baileys' own read
 * cache (`makeCacheableSignalKeyStore`, "make auth store more fast" in its
 * README). */
export function socketAuth (auth) {
  return { creds: auth.state.creds, keys: makeCacheableSignalKeyStore(auth.state.keys, logger) }
}

/** Waits for `pred(value)` over the values delivered to the `waiters` set. */
function waitFor (what, timeoutMs, waiters, pred) {
  return new Promise((resolve, reject) => {
    const waiter = value => {
      if (!pred(value)) return
      waiters.delete(waiter)
      clearTimeout(timer)
      resolve(value)
    }
    const timer = setTimeout(() => {
      waiters.delete(waiter)
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
    }, timeoutMs)
    waiters.add(waiter)
  })
}

/**
 * One Baileys socket on the mock. `updates` records every connection update
 * in order; `messages` every message upserted (`notify` or `append`).
 */
export function connect (mock, auth, { onQr } = {}) {
  const sock = makeWASocket({ auth: socketAuth(auth), waWebSocketUrl: mock.url, logger })
  const updates = []
  const messages = []
  const updateWaiters = new Set()
  const messageWaiters = new Set()
  sock.ev.on('creds.update', auth.saveCreds)
  sock.ev.on('connection.update', u => {
    updates.push(u)
    if (u.qr && onQr) onQr(u.qr)
    for (const w of updateWaiters) w(u)
  })
  sock.ev.on('messages.upsert', ({ messages: ms }) => {
    for (const m of ms) {
      messages.push(m)
      for (const w of messageWaiters) w(m)
    }
  })
  const waitUpdate = (what, pred, timeoutMs = 20000) => {
    const seen = updates.find(pred)
    if (seen) return Promise.resolve(seen)
    return waitFor(what, timeoutMs, updateWaiters, pred)
  }
  return {
    sock,
    updates,
    messages,
    /** Resolves with the first update (recorded or coming) `pred` accepts. */
    waitUpdate,
    /** Resolves once the connection is open. */
    opened: (timeoutMs) => waitUpdate('connection open', u => u.connection === 'open', timeoutMs),
    /** Resolves with the close update (its status code in `code`). */
    async closed (timeoutMs) {
      const u = await waitUpdate('connection close', u => u.connection === 'close', timeoutMs)
      return { ...u, code: u.lastDisconnect?.error?.output?.statusCode }
    },
    /** Resolves with the first message (recorded or coming) `pred` accepts. */
    waitMessage (what, pred, timeoutMs = 20000) {
      const seen = messages.find(pred)
      if (seen) return Promise.resolve(seen)
      return waitFor(what, timeoutMs, messageWaiters, pred)
    }
  }
}

/**
 * Pairs a fresh Baileys by QR as account `account`: the mock's phone scans
 * the first QR, the mock ends the stream with 515, and a second socket logs
 * in with the saved creds. Resolves with that socket once it is open, and
 * the first socket's close.
 */
export async function pair (mock, { account = 0, timeoutMs = 30000 } = {}) {
  const auth = await freshAuth()
  let scanned = false
  const first = connect(mock, auth, {
    onQr: qr => {
      if (scanned) return
      scanned = true
      mock.cmd({ cmd: 'scan', qr, account }).catch(e => first.sock.end(e))
    }
  })
  const restart = await first.closed(timeoutMs)
  const second = connect(mock, auth)
  await second.opened(timeoutMs)
  return { auth, restart, peer: second }
}

/** Polls `check` (which may be async) every 50 ms until it is truthy;
 * resolves with its value, or rejects after `timeoutMs`. */
export async function until (what, check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** The text of a Baileys message, plain or extended. */
export function textOf (m) {
  return m.message?.conversation ?? m.message?.extendedTextMessage?.text
}

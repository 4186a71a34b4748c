// The Baileys side of bench.mjs, as its own Node process (forked, with an
// IPC channel): N sockets in one process, as a multi-instance host runs
// them, each with Baileys' multi-file auth state (behind its key cache) and
// an echo handler.
// It reports each QR (the harness has the mock's phone scan it) and each
// open; after a 515 it logs back in with the saved creds.
//
// argv: url certRootHex n
import { freshAuth, logger, socketAuth } from './baileys.mjs'
import makeWASocket, { DisconnectReason, WA_CERT_DETAILS } from 'baileys'

const [url, certRoot, n] = process.argv.slice(2)
WA_CERT_DETAILS.PUBLIC_KEY = Buffer.from(certRoot, 'hex')

function start (i, auth) {
  const sock = makeWASocket({ auth: socketAuth(auth), waWebSocketUrl: url, logger })
  sock.ev.on('creds.update', auth.saveCreds)
  sock.ev.on('connection.update', u => {
    if (u.qr) process.send({ qr: u.qr, i })
    if (u.connection === 'open') process.send({ open: i })
    if (u.connection === 'close') {
      const code = u.lastDisconnect?.error?.output?.statusCode
      if (code === DisconnectReason.restartRequired) start(i, auth)
      else process.send({ closed: i, code })
    }
  })
  // The echo: each text a contact sends comes back as a reply quoting it,
  // one send at a time per socket (as moonwire's outbox sends). Concurrent
  // sendMessage calls to one chat reuse a Signal counter in 7.0.0-rc14
  // (each relay commits its session only when it ends), which the
  // recipient cannot decrypt.
  let sending = Promise.resolve()
  sock.ev.on('messages.upsert', ({ messages, type }) => {
    if (type !== 'notify') return
    for (const m of messages) {
      const text = m.message?.conversation ?? m.message?.extendedTextMessage?.text
      if (m.key.fromMe || !text) continue
      sending = sending
        .then(() => sock.sendMessage(m.key.remoteJid, { text }, { quoted: m }))
        .catch(e => process.send({ error: `${i}: ${e.message}` }))
    }
  })
}

for (let i = 0; i < Number(n); i++) start(i, await freshAuth())
process.on('disconnect', () => process.exit(0))

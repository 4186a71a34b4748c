// An unmodified Baileys release (pinned in package.json) against the mock
// WhatsApp server of tests/support, run as its own process: it pairs by QR,
// logs in with the saved creds, receives a contact's message and answers
// it (the contact decrypts the answer), and ends in its own "replaced" and
// "logged out" closes when the server says so. What whatsapp-rust accepts
// from the mock, another client written from the real protocol accepts too.
//
// node --test --test-force-exit tests/peer/
//   MOCK_SERVER=target/debug/examples/mock_server skips the cargo run;
//   PEER_LOG=debug shows Baileys' own log on stderr.
// (--test-force-exit: Baileys leaves its 30 s pre-key upload timer running
// after a socket ends.)
import { test } from 'node:test'
import assert from 'node:assert/strict'

import { DisconnectReason } from 'baileys'

import { connect, pair, textOf, trustMock, until } from './baileys.mjs'
import { startMock } from './mock.mjs'

const ALICE = '15550001111'
const ALICE_JID = `${ALICE}@s.whatsapp.net`

/** Alice writes `text`; resolves with the message as Baileys emitted it. */
async function fromAlice (mock, peer, text) {
  const { id } = await mock.cmd({ cmd: 'message_from', contact: ALICE, push_name: 'Alice', text })
  return peer.waitMessage(`Alice's ${JSON.stringify(text)}`, m => m.key.id === id)
}

/** Resolves once Alice has decrypted `want` among what companions sent her. */
async function aliceReads (mock, want) {
  const read = []
  await until(`Alice reading ${JSON.stringify(want)}`, async () => {
    const { texts, undecryptable } = await mock.cmd({ cmd: 'deliver_to', contact: ALICE })
    assert.deepEqual(undecryptable, [], 'every message to Alice decrypts')
    read.push(...texts)
    return read.includes(want)
  }).catch(e => assert.fail(`${e.message}; she read ${JSON.stringify(read)}`))
}

test('Baileys pairs, logs in, talks to a contact and obeys the server\'s closes', async (t) => {
  const mock = await startMock()
  t.after(() => mock.stop())
  trustMock(mock)

  // Each step needs the one before it.
  let auth, peer
  await t.test('pairs by QR: scan, 515, log in with the saved creds', async () => {
    const paired = await pair(mock)
    assert.equal(paired.restart.code, DisconnectReason.restartRequired)
    assert.equal(paired.auth.state.creds.me.id, '15551234567:1@s.whatsapp.net')
    assert.equal((await mock.cmd({ cmd: 'counters' })).logins, 1)
    auth = paired.auth
    peer = paired.peer
  })

  await t.test('receives a contact\'s message; the contact decrypts the reply', async () => {
    const m = await fromAlice(mock, peer, 'hello from Alice')
    assert.equal(m.key.remoteJid, ALICE_JID)
    assert.equal(m.pushName, 'Alice')
    assert.equal(textOf(m), 'hello from Alice')
    await peer.sock.sendMessage(m.key.remoteJid, { text: 'hi Alice' }, { quoted: m })
    await aliceReads(mock, 'hi Alice')
    // Once more, on the sessions both sides have now.
    assert.equal(textOf(await fromAlice(mock, peer, 'and again')), 'and again')
    await peer.sock.sendMessage(ALICE_JID, { text: 'again to you' })
    await aliceReads(mock, 'again to you')
  })

  await t.test('stream:error 440 ends in Baileys\' "replaced" close', async () => {
    assert.equal((await mock.cmd({ cmd: 'stream_error', code: 440 })).connections, 1)
    assert.equal((await peer.closed()).code, DisconnectReason.connectionReplaced)
  })

  await t.test('<conflict type="replaced"> does too, after logging back in', async () => {
    const again = connect(mock, auth)
    await again.opened()
    assert.equal((await mock.cmd({ cmd: 'replace' })).connections, 1)
    assert.equal((await again.closed()).code, DisconnectReason.connectionReplaced)
  })

  await t.test('<failure reason="401"> ends in its logged-out close', async () => {
    const again = connect(mock, auth)
    await again.opened()
    assert.equal((await mock.cmd({ cmd: 'failure', reason: 401 })).connections, 1)
    assert.equal((await again.closed()).code, DisconnectReason.loggedOut)
  })
})

test('with a personal phone, Baileys gets the app-state key and still talks', async (t) => {
  const mock = await startMock(['--personal'])
  t.after(() => mock.stop())
  trustMock(mock)
  const { auth, peer } = await pair(mock)
  // The phone's key share, decrypted and stored by Baileys.
  const share = await peer.waitMessage('the app-state key share',
    m => m.message?.protocolMessage?.appStateSyncKeyShare)
  assert.equal(share.key.fromMe, true)
  assert.equal(await until('the key stored', () => auth.state.creds.myAppStateKeyId), 'AAAAAQAA')
  const m = await fromAlice(mock, peer, 'hello, personal')
  await peer.sock.sendMessage(m.key.remoteJid, { text: 'hi from a personal account' })
  await aliceReads(mock, 'hi from a personal account')
  peer.sock.end(undefined)
})

test('the mock process answers a bad line with an error line and exits when stdin closes', async () => {
  const mock = await startMock()
  for (const bad of ['garbage', '{"cmd": "warp"}', '{"cmd": "scan", "qr": 42}', '\u0000\u0001']) {
    const answer = await mock.raw(bad)
    assert.equal(answer.ok, false, `${bad} → ${JSON.stringify(answer)}`)
    assert.equal(typeof answer.error, 'string')
  }
  assert.equal((await mock.cmd({ cmd: 'counters' })).connections, 0)
  assert.deepEqual(await mock.stop(), { code: 0, signal: null })
})

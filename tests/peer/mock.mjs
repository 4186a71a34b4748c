// The mock WhatsApp server (tests/support, as the `mock_server` example) as
// a child process: one JSON command line in, one JSON answer line out.
//
// MOCK_SERVER names a built binary; without it the example is run through
// cargo from the repository root.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

/** Starts the mock (the `bin` given, else MOCK_SERVER, else through cargo);
 * resolves once it printed its URL and cert root. */
export async function startMock (args = [], bin = process.env.MOCK_SERVER) {
  const child = bin
    ? spawn(bin, args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] })
    : spawn('cargo', ['run', '--quiet', '--example', 'mock_server', '--', ...args], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'inherit']
    })
  const lines = createInterface({ input: child.stdout })
  const waiting = []
  let hello
  const exited = new Promise(resolve => child.once('exit', (code, signal) => resolve({ code, signal })))
  const first = new Promise((resolve, reject) => {
    hello = resolve
    exited.then(e => reject(new Error(`the mock server exited before it started: ${JSON.stringify(e)}`)))
  })
  lines.on('line', line => {
    if (hello) {
      const h = hello
      hello = undefined
      h(JSON.parse(line))
      return
    }
    const next = waiting.shift()
    if (next) next.resolve(JSON.parse(line))
  })
  exited.then(e => {
    for (const w of waiting.splice(0)) w.reject(new Error(`the mock server exited: ${JSON.stringify(e)}`))
  })
  const { url, cert_root: certRoot } = await first
  return {
    url,
    certRoot: Buffer.from(certRoot, 'hex'),
    pid: child.pid,
    /** Sends one command; resolves with its answer (`ok` false included). */
    send (cmd) {
      return new Promise((resolve, reject) => {
        waiting.push({ resolve, reject })
        child.stdin.write(JSON.stringify(cmd) + '\n')
      })
    },
    /** Sends one raw line (a test of bad input); resolves with the answer. */
    raw (line) {
      return new Promise((resolve, reject) => {
        waiting.push({ resolve, reject })
        child.stdin.write(line + '\n')
      })
    },
    /** Sends one command; rejects unless it answered `ok`. */
    async cmd (cmd) {
      const answer = await this.send(cmd)
      if (!answer.ok) throw new Error(`mock ${cmd.cmd}: ${answer.error}`)
      return answer
    },
    /** Closes stdin; resolves when the process is gone. */
    async stop () {
      child.stdin.end()
      return exited
    },
    exited
  }
}

// Runs the API document's VoidVMWebSocket class (tests/js/voidvm-client.js, verbatim) under
// Node: connectTerminal, then sendTerminalInput; its terminal-output handler collects output.
// Usage: node js_terminal_harness.js WS_URL TOKEN VM_ID USERNAME PASSWORD
'use strict'
const fs = require('fs')
const path = require('path')

globalThis.WebSocket = require('ws')
const source = fs.readFileSync(path.join(__dirname, '..', 'js', 'voidvm-client.js'), 'utf8')
// eslint-disable-next-line no-new-func
const VoidVMWebSocket = new Function(`${source}\nreturn VoidVMWebSocket`)()

const [url, token, vmId, username, password] = process.argv.slice(2)
const out = (kind, data) => process.stdout.write(JSON.stringify({ kind, data }) + '\n')
console.log = () => {} // the class logs "WebSocket connected": keep stdout for JSON lines

async function main () {
  const client = new VoidVMWebSocket(url, token)
  await client.connect()
  let output = ''
  let wanted = null
  // the class dispatches pushed frames by type to its event handlers
  client.eventHandlers.set('terminal-output', data => {
    output += data.output
    if (wanted && wanted.pattern.test(output)) wanted.resolve()
  })
  const waitFor = (pattern, ms = 10000) => new Promise((resolve, reject) => {
    if (pattern.test(output)) return resolve()
    const timer = setTimeout(() => reject(new Error(`no ${pattern} within ${ms} ms: ${JSON.stringify(output)}`)), ms)
    wanted = { pattern, resolve: () => { clearTimeout(timer); resolve() } }
  })
  const reply = await client.connectTerminal(vmId, { username, password })
  out('connected', reply)
  await waitFor(/welcome/)
  client.sendTerminalInput(vmId, 'hi-from-js\r')
  await waitFor(/hi-from-js\r\n/)
  out('output', output)
  client.ws.onclose = null
  client.disconnect()
  process.exit(0)
}

main().catch(err => { out('error', String(err && err.message ? err.message : err)); process.exit(1) })

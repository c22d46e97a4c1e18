// Runs the API document's VoidVMWebSocket class (tests/js/voidvm-client.js, verbatim) under
// Node: connectVnc, then sendVncInput as the document's example does, and prints one JSON line
// per step. Usage: node vnc_harness.js WS_URL TOKEN VM_ID
'use strict'
const fs = require('fs')
const path = require('path')

globalThis.WebSocket = require('ws')
const source = fs.readFileSync(path.join(__dirname, '..', 'js', 'voidvm-client.js'), 'utf8')
// eslint-disable-next-line no-new-func
const VoidVMWebSocket = new Function(`${source}\nreturn VoidVMWebSocket`)()

const [url, token, vmId] = process.argv.slice(2)
const out = (kind, data) => process.stdout.write(JSON.stringify({ kind, data }) + '\n')
console.log = () => {} // the class logs "WebSocket connected": keep stdout for JSON lines

async function main () {
  const client = new VoidVMWebSocket(url, token)
  await client.connect()
  out('vnc-connect', await client.connectVnc(vmId))
  // the document's example, then typing and a key press
  client.sendVncInput(vmId, 'mouse', { x: 100, y: 200, buttons: 1 })
  client.sendVncInput(vmId, 'mouse', { x: 100, y: 200, buttons: 0 })
  client.sendVncInput(vmId, 'text', { text: 'from the JS client' })
  client.sendVncInput(vmId, 'keyboard', { key: 'Enter', down: true })
  client.sendVncInput(vmId, 'keyboard', { key: 'Enter', down: false })
  // requests are answered in order: once this one is, the inputs above were handled
  out('ping', await client.send('ping', {}))
  client.ws.onclose = null
  client.disconnect()
  process.exit(0)
}

main().catch(err => { out('error', String(err && err.message ? err.message : err)); process.exit(1) })

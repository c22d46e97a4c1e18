// Runs the API document's VoidVMWebSocket class (tests/js/voidvm-client.js, verbatim)
// under Node against a virtwire server and prints one JSON line per thing it receives.
// Usage: node js_harness.js WS_URL TOKEN VM_ID
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

const statuses = []
const waiters = []
function waitStatus (want, ms = 10000) {
  const found = statuses.find(s => s.status === want)
  if (found) return Promise.resolve(found)
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no vm-status ${want} within ${ms} ms`)), ms)
    waiters.push({ want, resolve: s => { clearTimeout(timer); resolve(s) } })
  })
}

async function main () {
  const client = new VoidVMWebSocket(url, token)
  await client.connect()
  out('connected', null)
  const reply = await client.subscribeVmStatus(vmId, data => {
    out('vm-status', data)
    statuses.push(data)
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (waiters[i].want === data.status) waiters.splice(i, 1)[0].resolve(data)
    }
  })
  out('subscribed', reply)
  await waitStatus('running')
  statuses.length = 0
  out('stop-response', await client.stopVm(vmId))
  await waitStatus('stopped')
  statuses.length = 0
  out('start-response', await client.startVm(vmId))
  await waitStatus('running')
  out('done', null)
  client.ws.onclose = null
  client.disconnect()
  process.exit(0)
}

main().catch(err => { out('error', String(err && err.message ? err.message : err)); process.exit(1) })

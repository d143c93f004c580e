// A webhook receiver written for Keygen, as Keygen's documentation shows it: Express,
// the raw body kept for the Digest, the `Keygen-Signature` verified with the account's
// Ed25519 public key. Herald's default webhooks are accepted by it unchanged.
//
//   KEYGEN_PUBLIC_KEY=<hex public key of the tenant> PORT=8000 node server.js
//
// HOST (default 127.0.0.1) is the address it listens on; docker-compose.yml sets 0.0.0.0.
const crypto = require('crypto')
const express = require('express')

const PUBLIC_KEY_HEX = process.env.KEYGEN_PUBLIC_KEY
const PORT = Number(process.env.PORT || 8000)
const HOST = process.env.HOST || '127.0.0.1'
if (!PUBLIC_KEY_HEX) {
  console.error('set KEYGEN_PUBLIC_KEY to the tenant public key (hex)')
  process.exit(1)
}

// An Ed25519 SubjectPublicKeyInfo is this DER prefix followed by the 32 key bytes.
const publicKey = crypto.createPublicKey({
  key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), Buffer.from(PUBLIC_KEY_HEX, 'hex')]),
  format: 'der',
  type: 'spki',
})

const app = express()
app.use(express.json({
  type: ['application/json', 'application/vnd.api+json'],
  verify: (req, res, buf) => { req.rawBody = buf },
}))

app.post('/webhooks', (req, res) => {
  const header = req.headers['keygen-signature']
  if (!header) return res.sendStatus(400)

  // Recompute the digest of the raw body and compare.
  const digest = 'sha-256=' + crypto.createHash('sha256').update(req.rawBody).digest('base64')
  if (digest !== req.headers['digest']) return res.sendStatus(400)

  // Parse `key="value"` pairs.
  const params = {}
  for (const [, key, value] of header.matchAll(/(\w+)="([^"]*)"/g)) params[key] = value
  if (params.algorithm !== 'ed25519') return res.sendStatus(400)

  // Rebuild the signing string and verify it.
  const signingData = [
    `(request-target): post ${req.originalUrl}`,
    `host: ${req.hostname}`,
    `date: ${req.headers['date']}`,
    `digest: ${digest}`,
  ].join('\n')
  const ok = crypto.verify(null, Buffer.from(signingData), publicKey, Buffer.from(params.signature, 'base64'))
  if (!ok) return res.sendStatus(400)

  // Reject stale requests.
  if (Date.now() - Date.parse(req.headers['date']) > 5 * 60 * 1000) return res.sendStatus(400)

  const { data: { id, attributes: { event, payload } } } = req.body
  const resource = JSON.parse(payload)
  console.log(`verified ${event} webhook ${id} (key ${params.keyid}): ${resource.data.type} ${resource.data.id}`)

  switch (event) {
    case 'license.created':
      // Provision something for the new license.
      break
    default:
      break
  }
  res.sendStatus(200)
})

app.listen(PORT, HOST, () => console.log(`listening on http://${HOST}:${PORT}/webhooks`))

/**
 * Run by tests/deno.test.ts as `deno run tests/deno/shared-check.ts`, with no permissions: `shared/` imported the
 * way a Deno backend would (`@app/shared`, the workspace package), a message round-tripped through the codec, and
 * `node:sqlite` (the API's embedded store) handing a BLOB back. Prints what it saw as one JSON line, for the test to
 * judge.
 */
import { DatabaseSync } from 'node:sqlite'
import { JobUpdateSchema, decodeMessage, encodeMessage, type JobUpdate } from '@app/shared'

const update: JobUpdate = {
  version: 1,
  jobId: crypto.randomUUID(),
  status: 'processing',
  stage: 'processing',
  progress: 42.5,
  etaSeconds: 3,
  at: new Date().toISOString(),
}
const bytes = encodeMessage(JobUpdateSchema, update)
const decoded = decodeMessage(JobUpdateSchema, bytes)
const refused = decodeMessage(JobUpdateSchema, new TextEncoder().encode(JSON.stringify({ ...update, progress: 101 })))

const db = new DatabaseSync(':memory:')
db.exec('CREATE TABLE outbox (body BLOB NOT NULL)')
db.prepare('INSERT INTO outbox (body) VALUES (?)').run(bytes)
const { body } = db.prepare('SELECT body FROM outbox').get() as { body: unknown }
db.close()

console.log(
  JSON.stringify({
    runtime: 'Deno' in globalThis ? 'deno' : 'other',
    sent: update,
    decoded,
    refused,
    blob: {
      isUint8Array: body instanceof Uint8Array,
      sameBytes: body instanceof Uint8Array && body.length === bytes.length && body.every((b, i) => b === bytes[i]),
      decoded: body instanceof Uint8Array ? decodeMessage(JobUpdateSchema, body) : null,
    },
  })
)

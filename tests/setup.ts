/**
 * Preloaded by `bun test` (bunfig.toml): checks that RabbitMQ answers, starts a real S3-compatible server
 * (s3rver, in its own process so tests can stop it), and removes every namespace the run created.
 */
import { afterAll, setDefaultTimeout } from 'bun:test'
import amqp from 'amqplib'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { deleteNamespaces } from './helpers/rabbit.ts'
import { RABBITMQ_URL, removeDataDirs } from './helpers/env.ts'

setDefaultTimeout(60_000)

try {
  const connection = await amqp.connect(RABBITMQ_URL)
  await connection.close()
} catch (error) {
  throw new Error(
    `RabbitMQ is not reachable at ${RABBITMQ_URL.replace(/\/\/[^@]*@/, '//')} (${(error as Error).message}). ` +
      'Start it with `rabbitmq-server -detached` (or run `bash infra/setup.sh`), or point TEST_RABBITMQ_URL at one.'
  )
}

const s3Dir = mkdtempSync(join(tmpdir(), 'media-test-s3-'))
const s3Process = Bun.spawn(['bun', join(import.meta.dir, '../infra/s3-server.ts'), '--dir', s3Dir, '--bucket', 'media-test'], {
  stdout: 'pipe',
  stderr: 'inherit',
})
const firstLine = await readFirstLine(s3Process.stdout, 15_000)
const { endpoint } = JSON.parse(firstLine) as { endpoint: string }
process.env.TEST_S3_ENDPOINT = endpoint
process.env.TEST_S3_BUCKET = 'media-test'
// Fault tests stop and continue the S3 server (SIGSTOP/SIGCONT) to simulate an outage without losing its data.
process.env.TEST_S3_PID = String(s3Process.pid)

afterAll(async () => {
  await deleteNamespaces()
  removeDataDirs()
  s3Process.kill()
  await s3Process.exited
  rmSync(s3Dir, { recursive: true, force: true })
})

async function readFirstLine(stream: ReadableStream<Uint8Array>, timeoutMs: number): Promise<string> {
  const reader = stream.getReader()
  const timer = setTimeout(() => void reader.cancel(), timeoutMs)
  let text = ''
  while (!text.includes('\n')) {
    const { value, done } = await reader.read()
    if (done) throw new Error(`the local S3 server did not start within ${timeoutMs} ms`)
    text += new TextDecoder().decode(value)
  }
  clearTimeout(timer)
  reader.releaseLock()
  return text.slice(0, text.indexOf('\n'))
}

/**
 * The real services the integration tests use, and what a run makes in them. RabbitMQ is checked, not started (it
 * must run); a real S3-compatible server (the embedded store, infra/s3-server.ts) is started in a process of its own,
 * so fault tests can freeze it.
 * Both are started on first use, so the pure tests (tests/unit) run without either.
 *
 * Every namespace a test makes holds eight quorum queues, and RabbitMQ reserves file handles for each (about three;
 * with the usual limit of 1024 open files it stops accepting connections past ~300 queues). So a test file removes
 * its namespaces when it ends (`useInfra` at its top), not only the run.
 */
import { afterAll } from 'bun:test'
import amqp from 'amqplib'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MEDIA_TYPES, cancelExchange, deadLetterExchange, eventsExchange, queueNames } from '@app/shared'

export const RABBITMQ_URL = process.env.TEST_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672'
export const TEST_BUCKET = 'media-test'

let started: Promise<{ stop(): Promise<void> }> | undefined

/**
 * For the top of an integration test file: starts the services (once per run) and removes the namespaces the file
 * made when it ends. Only at the top level: a hook registered inside another hook or a test does not wait for the
 * file's end.
 */
export async function useInfra(): Promise<void> {
  afterAll(() => deleteNamespaces())
  await startInfra()
}

/**
 * Checks RabbitMQ and starts the S3 server, once per run; sets TEST_S3_ENDPOINT, TEST_S3_BUCKET and TEST_S3_PID
 * (fault tests stop and continue the server with SIGSTOP/SIGCONT to simulate an outage without losing its data).
 */
export async function startInfra(): Promise<void> {
  started ??= start()
  await started
}

/** Stops what `startInfra` started (nothing when it never ran). */
export async function stopInfra(): Promise<void> {
  if (!started) return
  const infra = await started.catch(() => undefined)
  started = undefined
  await infra?.stop()
}

const namespaces = new Set<string>()

/** Every namespace made in this run, for the last look at its end (`deleteLeftovers`). */
const made = new Set<string>()

/** Records a namespace (`SYSTEM`) a test made, to be removed from the broker afterwards. */
export function trackNamespace(system: string): void {
  namespaces.add(system)
  made.add(system)
}

/**
 * At the end of the run: deletes what is left of any namespace this run made. A service still running when its
 * file's cleanup ran (hooks run in an order the file does not fully choose) can reconnect and declare its queues
 * again; this finds those on the broker (`rabbitmqctl`, when the broker is local) and deletes them.
 */
export async function deleteLeftovers(): Promise<void> {
  if (!made.size || !Bun.which('rabbitmqctl')) return
  const child = Bun.spawn(['rabbitmqctl', '-q', 'list_queues', 'name'], { stdout: 'pipe', stderr: 'ignore' })
  const listed = await new Response(child.stdout).text()
  if ((await child.exited) !== 0) return
  for (const queue of listed.split('\n')) {
    const system = queue.slice(0, queue.indexOf('.media.'))
    if (made.has(system)) namespaces.add(system)
  }
  await deleteNamespaces()
}

/** Deletes every queue and exchange of the namespaces made since the last call. */
export async function deleteNamespaces(): Promise<void> {
  if (namespaces.size === 0) return
  const systems = [...namespaces]
  namespaces.clear()
  const connection = await amqp.connect(RABBITMQ_URL)
  try {
    for (const system of systems) {
      const queues = MEDIA_TYPES.flatMap((type) => Object.values(queueNames(system, type)))
      const exchanges = [deadLetterExchange(system), cancelExchange(system), eventsExchange(system)]
      for (const [kind, name] of [
        ...queues.map((q) => ['queue', q] as const),
        ...exchanges.map((x) => ['exchange', x] as const),
      ]) {
        // Deleting what is missing is fine; a fresh channel per call keeps one error from poisoning the rest.
        const channel = await connection.createChannel()
        channel.on('error', () => {})
        await (kind === 'queue' ? channel.deleteQueue(name) : channel.deleteExchange(name)).catch(() => {})
        await channel.close().catch(() => {})
      }
    }
  } finally {
    await connection.close()
  }
}

async function start() {
  try {
    await (await amqp.connect(RABBITMQ_URL)).close()
  } catch (error) {
    throw new Error(
      `RabbitMQ is not reachable at ${RABBITMQ_URL.replace(/\/\/[^@]*@/, '//')} (${(error as Error).message}). ` +
        'Start it with `rabbitmq-server -detached` (or run `bash infra/setup.sh`), or point TEST_RABBITMQ_URL at one.'
    )
  }
  const dir = mkdtempSync(join(tmpdir(), 'media-test-s3-'))
  const server = Bun.spawn(
    ['bun', join(import.meta.dir, '../../infra/s3-server.ts'), '--dir', dir, '--bucket', TEST_BUCKET],
    {
      stdout: 'pipe',
      stderr: 'inherit',
    }
  )
  const { endpoint } = JSON.parse(await readFirstLine(server.stdout, 15_000)) as { endpoint: string }
  process.env.TEST_S3_ENDPOINT = endpoint
  process.env.TEST_S3_BUCKET = TEST_BUCKET
  process.env.TEST_S3_PID = String(server.pid)
  return {
    async stop() {
      server.kill('SIGCONT') // a frozen server cannot exit
      server.kill()
      await server.exited
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

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

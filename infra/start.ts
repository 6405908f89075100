/**
 * `bun run start`: the whole system on one machine. Checks RabbitMQ, starts the embedded S3-compatible store when
 * `S3_ENDPOINT` is not set (data under DATA_DIR), then runs the API and the processors as child processes with
 * that environment. If one of them exits, the others are stopped and the exit code is passed on.
 */
import amqp from 'amqplib'
import { join, resolve } from 'node:path'
import { describeBrokerUrls, parseBrokerUrls } from '@app/shared'
import { readDatabaseConfig } from '../services/api/config.ts'
import { ensureDevKey } from '../services/api/auth/dev-key.ts'
import { openStore } from '../services/api/store/open.ts'
import { LOCAL_S3_CREDENTIALS, startS3Server, type LocalS3 } from './s3-server.ts'

const SERVICES = ['api', 'images', 'videos', 'audio'] as const
const root = resolve(import.meta.dir, '..')
const env: Record<string, string | undefined> = { ...process.env }
const dataDir = resolve(env.DATA_DIR ?? './.data')
env.DATA_DIR = dataDir
// One URL, or a cluster's nodes (the services connect to them in turn): one node answering is enough to start.
const rabbitmq = parseBrokerUrls(env.RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672')
if (!rabbitmq.ok) {
  console.error(`start: RABBITMQ_URL: ${rabbitmq.reason}`)
  process.exit(2)
}

try {
  await Promise.any(rabbitmq.urls.map(async (url) => (await amqp.connect(url)).close()))
} catch (error) {
  const reasons = (error as AggregateError).errors.map((e: Error) => e.message).join('; ')
  console.error(
    `start: RabbitMQ is not reachable at ${describeBrokerUrls(rabbitmq.urls)} (${reasons}).\n` +
      '  It is the one service this system needs. Start it with `rabbitmq-server -detached`\n' +
      '  (install: `apt-get install rabbitmq-server`, or run `bash infra/setup.sh`), or set RABBITMQ_URL.'
  )
  process.exit(1)
}

await checkConsumerTimeout(Number(env.ACK_DEADLINE_SECONDS ?? 1500))

let s3: LocalS3 | undefined
if (!env.S3_ENDPOINT) {
  const port = Number(env.S3_PORT ?? 9000)
  env.S3_BUCKET ??= 'media'
  s3 = await startS3Server({ port, directory: join(dataDir, 's3'), bucket: env.S3_BUCKET })
  Object.assign(env, {
    S3_ENDPOINT: s3.endpoint,
    S3_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
    S3_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
  })
  console.log(`start: embedded S3 at ${s3.endpoint}, bucket ${env.S3_BUCKET}, data in ${join(dataDir, 's3')}`)
}

await showDevKey()

/** Each processor's `/metrics`, `/livez` and `/readyz` (the API serves its own on PORT); two systems on one machine set them apart. */
const METRICS_PORTS: Partial<Record<(typeof SERVICES)[number], string>> = {
  images: env.IMAGES_METRICS_PORT ?? '9101',
  videos: env.VIDEOS_METRICS_PORT ?? '9102',
  audio: env.AUDIO_METRICS_PORT ?? '9103',
}
/**
 * libvips allocates through glibc's malloc, which gives each of its threads an arena of its own and keeps what they
 * free: the image processor's RSS climbed from 260 to 330 MB over 2,000 mixed images and swung by 60 MB between
 * samples; with two arenas it stayed at 210–250 MB (issue 13's figure 7). sharp's documentation gives the same
 * advice. A value in the environment wins.
 */
const OWN_ENV: Partial<Record<(typeof SERVICES)[number], Record<string, string>>> = {
  images: { MALLOC_ARENA_MAX: '2' },
}
const children = SERVICES.map((name) => ({
  name,
  process: Bun.spawn(['bun', join(root, 'services', name, 'main.ts')], {
    env: { ...OWN_ENV[name], ...env, ...(METRICS_PORTS[name] ? { METRICS_PORT: METRICS_PORTS[name] } : {}) },
    stdio: ['ignore', 'inherit', 'inherit'],
  }),
}))

let stopping = false
async function stopAll(code: number): Promise<never> {
  if (!stopping) {
    stopping = true
    for (const child of children) child.process.kill('SIGTERM')
    await Promise.all(children.map((c) => c.process.exited))
    await s3?.close()
  }
  process.exit(code)
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void stopAll(0))
const first = await Promise.race(children.map(async (c) => ({ name: c.name, code: await c.process.exited })))
if (!stopping) {
  console.error(`start: ${first.name} exited with code ${first.code}; stopping the others`)
  await stopAll(first.code || 1)
}

/**
 * With no keys configured (no API_KEYS, AUTH not `none`), makes a development key on the first start and shows it
 * once with a curl example; later starts say where it is kept.
 */
async function showDevKey(): Promise<void> {
  if (env.API_KEYS || env.AUTH === 'none') return
  const file = join(dataDir, 'dev-api-key')
  const store = await openStore(readDatabaseConfig(env).database)
  try {
    const dev = await ensureDevKey(store, file)
    if (!dev) return
    const api = `http://127.0.0.1:${env.PORT ?? 3000}`
    if (dev.created) {
      console.log(
        `start: created a development API key (tenant dev), shown this once and kept in ${file}:\n\n  ${dev.key}\n\n` +
          `  curl -H "Authorization: Bearer ${dev.key}" --data-binary @photo.jpg ${api}/v1/media\n` +
          `  or open the console, ${api}/, and sign in with it\n`
      )
    } else {
      console.log(
        `start: the development API key is in ${file}: curl -H "Authorization: Bearer $(cat ${file})" ${api}/v1/media/<id>`
      )
      console.log(`start: the console is at ${api}/ (sign in with that key)`)
    }
  } finally {
    await store.close()
  }
}

/**
 * The video processor acks a delivery it still holds at its ack deadline; RabbitMQ must not close the channel
 * first. A local broker can be asked (rabbitmqctl); a remote one is the operator's (see infra/rabbitmq/rabbitmq.conf).
 */
async function checkConsumerTimeout(ackDeadlineSeconds: number): Promise<void> {
  if (!Bun.which('rabbitmqctl')) return
  const child = Bun.spawn(['rabbitmqctl', '-q', 'eval', 'application:get_env(rabbit, consumer_timeout).'], {
    stdout: 'pipe',
    stderr: 'ignore',
  })
  const out = await new Response(child.stdout).text()
  if ((await child.exited) !== 0) return
  const timeout = /\{ok,(\d+)\}/.exec(out)
  if (timeout && Number(timeout[1]) / 1000 <= ackDeadlineSeconds) {
    console.warn(
      `start: RabbitMQ's consumer_timeout is ${Number(timeout[1]) / 1000} s, not above the video processor's ACK_DEADLINE_SECONDS ` +
        `(${ackDeadlineSeconds} s): long transcodes would have their channel closed. Raise consumer_timeout (infra/rabbitmq/rabbitmq.conf) ` +
        'or lower ACK_DEADLINE_SECONDS.'
    )
  }
}

/**
 * Back-pressure: when RabbitMQ refuses work (a resource alarm, a queue at its length limit), an upload gets 503
 * with a clear error in bounded time, nothing half-made remains, and uploads succeed again once it recovers.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import sharp from 'sharp'
import { queueNames } from '@app/shared'
import { startStack, type Stack } from './helpers/stack.ts'
import { useInfra } from './helpers/infra.ts'

// The real broker and S3 server (started once per run); the namespaces this file makes are removed when it ends.
await useInfra()

const rabbitmqctl = async (...args: string[]) => {
  const child = Bun.spawn(['rabbitmqctl', '-q', ...args], { stdout: 'pipe', stderr: 'pipe' })
  if ((await child.exited) !== 0)
    throw new Error(`rabbitmqctl ${args.join(' ')}: ${await new Response(child.stderr).text()}`)
}
const png = () =>
  sharp({ create: { width: 40, height: 30, channels: 3, background: '#3a7' } })
    .png()
    .toBuffer()

describe('when the broker refuses work', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack({ images: false })
  })
  afterAll(async () => {
    await rabbitmqctl('set_vm_memory_high_watermark', '0.4')
    await rabbitmqctl('clear_policy', `${stack.env.SYSTEM}-limit`).catch(() => {})
    await stack.stop()
  })

  test('a memory alarm gets 503 in bounded time, then at once with health saying why; uploads work again after it clears', async () => {
    await rabbitmqctl('set_vm_memory_high_watermark', '0.0001')
    try {
      // RabbitMQ tells a connection it is blocked once it publishes: the first upload waits for its confirm (5 s at
      // most) and gets 503; from then on the API knows, says so in /health, and refuses at once.
      let started = Date.now()
      const first = await stack.upload(await png())
      expect(first.status).toBe(503)
      expect(Date.now() - started).toBeLessThan(7_000)
      const health = (await (await fetch(`${stack.url}/health`)).json()) as {
        checks: { rabbitmq: { ok: boolean; error?: string } }
      }
      expect(health.checks.rabbitmq).toEqual({ ok: false, error: expect.stringContaining('refusing new messages') })

      started = Date.now()
      const res = await stack.upload(await png())
      expect(Date.now() - started).toBeLessThan(1_000)
      expect(res.status).toBe(503)
      expect(res.headers.get('retry-after')).toBe('5')
      expect(await res.json()).toEqual({
        error: { code: 'queue_unavailable', message: expect.stringContaining('RabbitMQ refuses new messages') },
      })
      expect((await stack.api.store.media.countJobs()).queued).toBe(0) // undone: no job without a queued request
    } finally {
      await rabbitmqctl('set_vm_memory_high_watermark', '0.4')
    }
    const deadline = Date.now() + 15_000
    let status = 0
    while (status !== 202 && Date.now() < deadline) {
      status = (await stack.upload(await png())).status
      if (status !== 202) await Bun.sleep(100)
    }
    expect(status).toBe(202)
  }, 40_000)

  test('a request queue at its length limit gets 503 for the uploads past it', async () => {
    const queue = queueNames(stack.env.SYSTEM!, 'images').request
    // An operator's limit, as a policy; quorum queues may overshoot it by one.
    await rabbitmqctl(
      'set_policy',
      `${stack.env.SYSTEM}-limit`,
      `^${queue.replaceAll('.', '\\.')}$`,
      '{"max-length": 2}',
      '--apply-to',
      'queues'
    )
    try {
      const statuses: number[] = []
      for (let i = 0; i < 6; i++) statuses.push((await stack.upload(await png())).status)
      expect(statuses.filter((s) => s === 202).length).toBeLessThanOrEqual(3)
      expect(statuses.slice(-2)).toEqual([503, 503])
      const refused = await stack.upload(await png())
      expect(await refused.json()).toEqual({
        error: { code: 'queue_unavailable', message: expect.stringContaining('refused') },
      })
    } finally {
      await rabbitmqctl('clear_policy', `${stack.env.SYSTEM}-limit`)
    }
  }, 30_000)
})

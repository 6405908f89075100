/**
 * Signed webhooks against the real API, broker, S3 and image processor, with a receiver on loopback (allowed by
 * WEBHOOK_ALLOW_PRIVATE and WEBHOOK_ALLOW_HTTP, as an operator would allow it): signatures checked by the
 * `standardwebhooks` library as an independent oracle; retries after failures; 410 disabling; rotation; delivery
 * once after an API restart; and the URL rules on an API with the defaults.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import sharp from 'sharp'
import type * as v from 'valibot'
import { Webhook as Verifier } from 'standardwebhooks'
import { readConfig as readApiConfig, serverBodyCap } from '../services/api/config.ts'
import { startApi } from '../services/api/start.ts'
import type { WebhookDeliveryListSchema } from '../services/api/http/bodies.ts'
import { apiKey, testEnv } from './helpers/env.ts'
import { useInfra } from './helpers/infra.ts'
import { startStack, type MediaBody, type Stack } from './helpers/stack.ts'
import { unitApp } from './helpers/unit-app.ts'

await useInfra()

interface Receipt {
  headers: Record<string, string>
  body: string
  answered: number
}

/** An endpoint on loopback that answers each delivery as `answer` says (200 by default) and keeps what it got. */
function receiver() {
  const receipts: Receipt[] = []
  let answer: (n: number) => number = () => 200
  const waiters: (() => void)[] = []
  const server = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    async fetch(request) {
      const status = answer(receipts.length)
      const headers: Record<string, string> = {}
      request.headers.forEach((value, name) => (headers[name] = value))
      receipts.push({ headers, body: await request.text(), answered: status })
      for (const wake of waiters.splice(0)) wake()
      return new Response(status === 200 ? 'ok' : 'no', { status })
    },
  })
  return {
    url: `http://127.0.0.1:${server.port}/hooks`,
    receipts,
    answerWith(rule: (n: number) => number) {
      answer = rule
    },
    /** Resolves once `count` deliveries have come; fails after `timeoutMs`. */
    async waitFor(count: number, timeoutMs = 15_000): Promise<Receipt[]> {
      const deadline = Date.now() + timeoutMs
      while (receipts.length < count) {
        if (Date.now() > deadline)
          throw new Error(`${receipts.length} of ${count} deliveries came within ${timeoutMs} ms`)
        await new Promise<void>((resolve) => {
          waiters.push(resolve)
          setTimeout(resolve, 200)
        })
      }
      return receipts
    },
    stop: () => server.stop(true),
  }
}

const WEBHOOK_ENV = {
  WEBHOOK_ALLOW_PRIVATE: 'true',
  WEBHOOK_ALLOW_HTTP: 'true',
  WEBHOOK_RETRY_SCHEDULE: '0.2',
  PUBLIC_URL: 'https://media.example',
}
const png = (colour: string) =>
  sharp({ create: { width: 40, height: 30, channels: 3, background: colour } })
    .png()
    .toBuffer()

describe('webhooks, end to end', () => {
  let stack: Stack
  beforeAll(async () => {
    stack = await startStack({ env: WEBHOOK_ENV })
  })
  afterAll(async () => {
    await stack?.stop()
  })

  const register = async (url: string, events: string[]) => {
    const res = await stack.fetch('/v1/webhooks', {
      method: 'POST',
      body: JSON.stringify({ url, events }),
      headers: { 'content-type': 'application/json' },
    })
    expect(res.status).toBe(201)
    return (await res.json()) as { id: string; secret: string; url: string; events: string[] }
  }
  /** The webhook's deliveries once `done` holds for them (the receiver hears a delivery just before it is recorded). */
  const deliveries = async (
    hookId: string,
    done: (d: { status: string; attempts: number }[]) => boolean,
    timeoutMs = 10_000
  ) => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const list = (
        (await (await stack.fetch(`/v1/webhooks/${hookId}/deliveries`)).json()) as v.InferOutput<
          typeof WebhookDeliveryListSchema
        >
      ).deliveries
      if (done(list)) return list
      if (Date.now() > deadline)
        throw new Error(`the deliveries of ${hookId} did not settle within ${timeoutMs} ms: ${JSON.stringify(list)}`)
      await Bun.sleep(50)
    }
  }
  const completeOne = async (colour: string) => {
    const { id } = (await (await stack.upload(await png(colour))).json()) as { id: string }
    const media = await stack.waitForFinal(id)
    expect(media.status).toBe('completed')
    return media
  }

  test('a completed media is delivered signed: standardwebhooks verifies it, and its data is the media as GET shows it', async () => {
    const endpoint = receiver()
    try {
      const hook = await register(endpoint.url, ['media.completed'])
      expect(hook.secret).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/)
      // The secret is shown once: never listed or read back.
      const listed = await (await stack.fetch('/v1/webhooks')).text()
      expect(listed).toContain(hook.id)
      expect(listed).not.toContain(hook.secret)
      expect(await (await stack.fetch(`/v1/webhooks/${hook.id}`)).text()).not.toContain('whsec_')

      const media = await completeOne('#336699')
      const [receipt] = await endpoint.waitFor(1)
      const payload = new Verifier(hook.secret).verify(receipt!.body, receipt!.headers) as {
        type: string
        timestamp: string
        data: MediaBody
      }
      expect(payload.type).toBe('media.completed')
      expect(receipt!.headers['webhook-id']).toMatch(/^msg_[0-9a-f]{32}$/)
      const { outputs, ...rest } = payload.data
      const { outputs: shown, updatedAt: _u, ...current } = media
      expect({ ...rest, updatedAt: undefined }).toMatchObject({ ...current, updatedAt: undefined })
      expect(outputs.map((o) => o.name)).toEqual(shown.map((o) => o.name))
      // The outputs' URLs are on PUBLIC_URL: the receiver is not the one who asked.
      for (const output of outputs)
        expect(output.url).toStartWith(`https://media.example/v1/media/${media.id}/outputs/`)
      // A tampered body does not verify.
      expect(() =>
        new Verifier(hook.secret).verify(receipt!.body.replace('completed', 'failed'), receipt!.headers)
      ).toThrow()
      const settled = await deliveries(hook.id, (list) => list[0]?.status === 'delivered')
      expect(settled).toEqual([
        expect.objectContaining({
          id: receipt!.headers['webhook-id'],
          status: 'delivered',
          attempts: 1,
          lastStatus: 200,
        }),
      ])
      await stack.fetch(`/v1/webhooks/${hook.id}`, { method: 'DELETE' })
    } finally {
      endpoint.stop()
    }
  })

  test('a receiver failing twice gets the same delivery (id and body) on the third attempt; a redelivery sends it again', async () => {
    const endpoint = receiver()
    endpoint.answerWith((n) => (n < 2 ? 500 : 200))
    try {
      const hook = await register(endpoint.url, ['media.completed'])
      await completeOne('#993366')
      const receipts = await endpoint.waitFor(3)
      expect(receipts.map((r) => r.answered)).toEqual([500, 500, 200])
      expect(new Set(receipts.map((r) => r.headers['webhook-id'])).size).toBe(1)
      expect(new Set(receipts.map((r) => r.body)).size).toBe(1)
      for (const r of receipts) expect(() => new Verifier(hook.secret).verify(r.body, r.headers)).not.toThrow()
      const [delivery] = await deliveries(hook.id, (list) => list[0]?.status === 'delivered')
      expect(delivery).toMatchObject({ status: 'delivered', attempts: 3, lastStatus: 200 })
      // Every attempt is kept: what each got, how long it took, and what followed.
      expect(delivery!.history.map((a) => [a.number, a.status, a.outcome])).toEqual([
        [1, 500, 'retry'],
        [2, 500, 'retry'],
        [3, 200, 'delivered'],
      ])
      expect(delivery!.history[0]!.error).toContain('the endpoint answered 500')
      expect(delivery!.history[2]!.error).toBeNull()
      for (const a of delivery!.history) expect(a.durationMs).toBeGreaterThanOrEqual(0)
      expect(Date.parse(delivery!.history[2]!.at)).toBeGreaterThan(Date.parse(delivery!.history[0]!.at))
      const metrics = await (await fetch(`${stack.url}/metrics`)).text()
      expect(metrics).toMatch(/media_webhook_attempts_total\{outcome="retry",service="api"\} [2-9]/)

      const again = await stack.fetch(`/v1/webhooks/${hook.id}/deliveries/${delivery!.id}/redeliver`, {
        method: 'POST',
      })
      expect(again.status).toBe(202)
      const [, , , fourth] = await endpoint.waitFor(4)
      expect(fourth!.headers['webhook-id']).toBe(delivery!.id)
      expect(fourth!.body).toBe(receipts[0]!.body)
      await stack.fetch(`/v1/webhooks/${hook.id}`, { method: 'DELETE' })
    } finally {
      endpoint.stop()
    }
  })

  test('an endpoint answering 410 Gone is disabled, and nothing more is sent to it', async () => {
    const endpoint = receiver()
    endpoint.answerWith(() => 410)
    try {
      const hook = await register(endpoint.url, ['media.completed'])
      await completeOne('#669933')
      await endpoint.waitFor(1)
      const deadline = Date.now() + 10_000
      let shown: { disabledAt: string | null; disabledReason: string | null }
      do shown = await (await stack.fetch(`/v1/webhooks/${hook.id}`)).json()
      while (!shown.disabledAt && Date.now() < deadline && (await Bun.sleep(50), true))
      expect(shown).toMatchObject({ disabledReason: 'answered 410 Gone' })
      await completeOne('#339966')
      // Another completion went through the whole pipeline: its event was not written for a disabled endpoint.
      const list = await deliveries(hook.id, (l) => l.every((d) => d.status !== 'pending'))
      expect(list.map((d) => d.status)).toEqual(['failed'])
      expect(endpoint.receipts).toHaveLength(1)
    } finally {
      endpoint.stop()
    }
  })

  test('after a rotation each delivery carries both signatures, so either secret verifies it', async () => {
    const endpoint = receiver()
    try {
      const hook = await register(endpoint.url, ['media.deleted'])
      const rotated = (await (await stack.fetch(`/v1/webhooks/${hook.id}/rotate`, { method: 'POST' })).json()) as {
        secret: string
      }
      expect(rotated.secret).not.toBe(hook.secret)
      const { id } = (await (await stack.upload(await png('#123456'))).json()) as { id: string }
      await stack.waitForFinal(id)
      expect((await stack.fetch(`/v1/media/${id}`, { method: 'DELETE' })).status).toBe(204)
      const [receipt] = await endpoint.waitFor(1)
      expect(receipt!.headers['webhook-signature']!.split(' ')).toHaveLength(2)
      for (const secret of [hook.secret, rotated.secret]) {
        const payload = new Verifier(secret).verify(receipt!.body, receipt!.headers) as {
          type: string
          data: { id: string }
        }
        expect(payload).toMatchObject({ type: 'media.deleted', data: { id } })
      }
      await stack.fetch(`/v1/webhooks/${hook.id}`, { method: 'DELETE' })
    } finally {
      endpoint.stop()
    }
  })

  test('another tenant neither reads nor lists a webhook', async () => {
    const hook = await register('http://127.0.0.1:1/never', ['media.completed'])
    const { issueKey } = await import('../services/api/auth/keys.ts')
    const other = await issueKey(stack.api.store, 'webhook-other')
    const res = await stack.fetch(`/v1/webhooks/${hook.id}`, { headers: { authorization: `Bearer ${other.key}` } })
    expect(res.status).toBe(404)
    expect(
      (
        (await (await stack.fetch('/v1/webhooks', { headers: { authorization: `Bearer ${other.key}` } })).json()) as {
          webhooks: unknown[]
        }
      ).webhooks
    ).toEqual([])
    await stack.fetch(`/v1/webhooks/${hook.id}`, { method: 'DELETE' })
  })
})

describe('webhooks across a restart', () => {
  test('an event written while the receiver is down is delivered once by the API started again', async () => {
    const endpoint = receiver()
    endpoint.answerWith(() => 503)
    // No processor: the event is a cancel, which the API makes by itself.
    const env = testEnv({ ...WEBHOOK_ENV, WEBHOOK_RETRY_SCHEDULE: '0.5' })
    const config = readApiConfig(env)
    const serve = async () => {
      const api = await startApi(config)
      const server = Bun.serve({
        port: 0,
        fetch: api.app.fetch,
        maxRequestBodySize: serverBodyCap(config.maxUploadBytes),
      })
      const call = (path: string, init: RequestInit = {}) =>
        fetch(`http://127.0.0.1:${server.port}${path}`, {
          ...init,
          headers: { ...apiKey, 'content-type': 'application/json', ...(init.headers as object) },
        })
      return { call, stop: async () => (await server.stop(true), await api.stop()) }
    }
    try {
      const first = await serve()
      const hook = (await (
        await first.call('/v1/webhooks', {
          method: 'POST',
          body: JSON.stringify({ url: endpoint.url, events: ['media.cancelled'] }),
        })
      ).json()) as {
        id: string
        secret: string
      }
      const { id } = (await (
        await first.call('/v1/media', {
          method: 'POST',
          body: await png('#445566'),
          headers: { 'content-type': 'application/octet-stream' },
        })
      ).json()) as {
        id: string
      }
      expect((await first.call(`/v1/media/${id}/cancel`, { method: 'POST' })).status).toBe(200)
      await endpoint.waitFor(1) // tried, and refused
      await first.stop()

      endpoint.answerWith(() => 200)
      const second = await serve()
      try {
        const deadline = Date.now() + 15_000
        let delivery: { status: string; attempts: number; id: string } | undefined
        while (Date.now() < deadline) {
          ;[delivery] = (
            (await (await second.call(`/v1/webhooks/${hook.id}/deliveries`)).json()) as {
              deliveries: (typeof delivery)[]
            }
          ).deliveries
          if (delivery?.status === 'delivered') break
          await Bun.sleep(100)
        }
        expect(delivery?.status).toBe('delivered')
        const delivered = endpoint.receipts.filter((r) => r.answered === 200)
        expect(delivered).toHaveLength(1)
        expect(delivered[0]!.headers['webhook-id']).toBe(delivery!.id)
        // Every attempt reached the receiver once: none was sent twice.
        expect(endpoint.receipts).toHaveLength(delivery!.attempts)
        expect(
          (new Verifier(hook.secret).verify(delivered[0]!.body, delivered[0]!.headers) as { type: string }).type
        ).toBe('media.cancelled')
      } finally {
        await second.stop()
      }
    } finally {
      endpoint.stop()
    }
  }, 60_000)
})

describe('webhook URLs, with the default rules', () => {
  test('https is required, and private, loopback and link-local destinations are refused in every form (the unit table has the rest)', async () => {
    const { request, store } = await unitApp()
    try {
      const create = (url: string) =>
        request('/v1/webhooks', {
          method: 'POST',
          body: JSON.stringify({ url, events: ['media.completed'] }),
          headers: { 'content-type': 'application/json' },
        })
      for (const [url, reason] of [
        ['http://hooks.example.com/x', 'https'],
        ['https://127.0.0.1/x', 'loopback'],
        ['https://localhost:8443/x', 'inward'],
        ['https://localhost.:8443/x', 'inward'],
        ['https://169.254.169.254/latest/meta-data', 'link-local'],
        ['https://[::1]/x', 'loopback'],
        ['https://[::ffff:7f00:1]:8443/hook', 'reaches 127.0.0.1'],
        ['https://[::ffff:127.0.0.1]:8443/hook', 'reaches 127.0.0.1'],
        ['https://[::ffff:a9fe:a9fe]/latest/meta-data', 'reaches 169.254.169.254'],
        ['https://[::ffff:10.0.0.1]/x', 'reaches 10.0.0.1'],
        ['https://user:pass@hooks.example.com/x', 'credentials'],
        ['not a url', 'absolute URL'],
      ] as const) {
        const res = await create(url)
        expect({ url, status: res.status }).toEqual({ url, status: 400 })
        expect(((await res.json()) as { error: { message: string } }).error.message).toContain(reason)
      }
      const bad = await request('/v1/webhooks', {
        method: 'POST',
        body: JSON.stringify({ url: 'https://hooks.example.com/x', events: ['media.exploded'] }),
        headers: { 'content-type': 'application/json' },
      })
      expect(bad.status).toBe(400)
      expect((await create('https://hooks.example.com/x')).status).toBe(201)
    } finally {
      await store.close()
    }
  })
})

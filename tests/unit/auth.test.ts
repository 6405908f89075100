/**
 * Keys, tenants and hardened HTTP through `app.request()`: no broker, no S3 (tests/helpers/unit-app.ts). What needs
 * the real parts (outputs, SSE, uploads, 429 under load) is in tests/security.test.ts.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { readConfig } from '../../services/api/config.ts'
import { hashKey, issueKey } from '../../services/api/auth/keys.ts'
import type { OutboxMessage } from '../../services/api/store/outbox.ts'
import { ADMIN_TOKEN, unitApp } from '../helpers/unit-app.ts'

const { app, store, key, request } = await unitApp()
afterAll(() => store.close())
const admin = { authorization: `Bearer ${ADMIN_TOKEN}` }

/** A media of `tenant`, written straight to the store (nothing is sent: the outbox row just waits). */
async function mediaOf(tenant: string) {
  const id = crypto.randomUUID()
  const jobId = crypto.randomUUID()
  const request: OutboxMessage = {
    messageId: crypto.randomUUID(),
    jobId,
    queue: 'unit.media.images.request',
    type: 'job.request',
    body: new Uint8Array([123, 125]),
  }
  await store.media.create({
    id,
    tenant,
    filename: 'a.jpg',
    kind: 'image',
    format: 'jpeg',
    size: 1,
    bucket: 'b',
    sourceKey: `unit/originals/${id}`,
    jobId,
    type: 'images',
    request,
  })
  return id
}

describe('API keys', () => {
  test('a missing, malformed, unknown or revoked key answers 401 with WWW-Authenticate: Bearer and never echoes the key', async () => {
    const { key: revoked, record } = await issueKey(store, 'unit')
    expect(
      (await request('/v1/media/' + crypto.randomUUID(), { headers: { authorization: `Bearer ${revoked}` } })).status
    ).toBe(404)
    await store.keys.revoke(record.id)
    const cases: [Record<string, string>, string][] = [
      [{}, 'Bearer realm="media"'],
      [{ authorization: 'Basic dXNlcjpwYXNz' }, 'error="invalid_request"'],
      [{ authorization: 'Bearer mk_this-key-was-never-issued-0123456789' }, 'error="invalid_token"'],
      [{ authorization: `Bearer ${revoked}` }, 'error="invalid_token"'],
    ]
    for (const [headers, challenge] of cases) {
      const res = await app.request('/v1/media/' + crypto.randomUUID(), { headers })
      expect(res.status).toBe(401)
      expect(res.headers.get('www-authenticate')).toContain(challenge)
      const text = await res.text()
      expect(JSON.parse(text).error.code).toBe('unauthorized')
      expect(text).not.toContain(revoked)
      expect(text).not.toContain('never-issued')
    }
  })

  test('the store keeps a hash and a prefix, never the key', async () => {
    const found = await store.keys.find(await hashKey(key))
    expect(found?.record.tenant).toBe('unit')
    expect(found?.hash).toMatch(/^[0-9a-f]{64}$/)
    expect(JSON.stringify(await store.keys.list())).not.toContain(key)
    expect(key.startsWith(found!.record.prefix)).toBe(true)
  })

  test('operators create, list and revoke keys behind ADMIN_TOKEN; a revoked key fails on its next request', async () => {
    expect(
      (
        await app.request('/v1/admin/keys', {
          method: 'POST',
          body: '{"tenant":"acme"}',
          headers: { 'content-type': 'application/json' },
        })
      ).status
    ).toBe(401)
    const created = await app.request('/v1/admin/keys', {
      method: 'POST',
      body: '{"tenant":"acme","name":"ci"}',
      headers: { ...admin, 'content-type': 'application/json' },
    })
    expect(created.status).toBe(201)
    const made = (await created.json()) as { id: string; tenant: string; key: string; prefix: string }
    expect(made).toMatchObject({ tenant: 'acme', name: 'ci', revokedAt: null })
    expect(made.key).toMatch(/^mk_[A-Za-z0-9_-]{43}$/)
    const use = () =>
      app.request(`/v1/media/${crypto.randomUUID()}`, { headers: { authorization: `Bearer ${made.key}` } })
    expect((await use()).status).toBe(404) // authenticated; the media just does not exist

    const listed = (await (await app.request('/v1/admin/keys?tenant=acme', { headers: admin })).json()) as {
      keys: { id: string }[]
    }
    expect(listed.keys.map((k) => k.id)).toEqual([made.id])
    expect(JSON.stringify(listed)).not.toContain(made.key)

    const revoked = await app.request(`/v1/admin/keys/${made.id}`, { method: 'DELETE', headers: admin })
    expect(((await revoked.json()) as { revokedAt: string | null }).revokedAt).toBeString()
    expect((await use()).status).toBe(401)
    expect(
      (await app.request(`/v1/admin/keys/${crypto.randomUUID()}`, { method: 'DELETE', headers: admin })).status
    ).toBe(404)
  })

  test('a tenant name outside the rule answers 400 naming tenant', async () => {
    for (const tenant of ['', '../x', 'a b', 'x'.repeat(65)]) {
      const res = await app.request('/v1/admin/keys', {
        method: 'POST',
        body: JSON.stringify({ tenant }),
        headers: { ...admin, 'content-type': 'application/json' },
      })
      expect(res.status).toBe(400)
      expect(((await res.json()) as { error: { message: string } }).error.message).toContain('tenant')
    }
  })
})

describe('tenants', () => {
  test("another tenant's media answers 404 on every route, exactly as an unknown id does", async () => {
    const theirs = await mediaOf('other')
    const mine = await mediaOf('unit')
    expect((await request(`/v1/media/${mine}`)).status).toBe(200)
    for (const [method, path] of [
      ['GET', `/v1/media/${theirs}`],
      ['GET', `/v1/media/${theirs}/events`],
      ['GET', `/v1/media/${theirs}/outputs/thumb`],
      ['POST', `/v1/media/${theirs}/cancel`],
      ['DELETE', `/v1/media/${theirs}`],
    ] as const) {
      const res = await request(path, { method })
      expect(res.status).toBe(404)
      expect(((await res.json()) as { error: { message: string } }).error.message).toBe(`no media with id ${theirs}`)
    }
    expect((await store.media.get(theirs))?.status).toBe('queued') // the cancel and the delete did nothing
  })

  test('the media body returns the sanitised file name', async () => {
    const id = await mediaOf('unit')
    expect(((await (await request(`/v1/media/${id}`)).json()) as { filename: string }).filename).toBe('a.jpg')
  })

  test('AUTH=none serves requests without a key, as the tenant "default"', async () => {
    const open = await unitApp({ auth: 'none' })
    const mine = crypto.randomUUID()
    expect((await open.app.request(`/v1/media/${mine}`)).status).toBe(404)
    const jobId = crypto.randomUUID()
    const outbox: OutboxMessage = {
      messageId: crypto.randomUUID(),
      jobId,
      queue: 'q',
      type: 'job.request',
      body: new Uint8Array(1),
    }
    await open.store.media.create({
      id: mine,
      tenant: 'default',
      filename: null,
      kind: 'image',
      format: 'png',
      size: 1,
      bucket: 'b',
      sourceKey: 'k',
      jobId,
      type: 'images',
      request: outbox,
    })
    expect((await open.app.request(`/v1/media/${mine}`)).status).toBe(200)
    open.store.close()
  })
})

describe('HTTP headers', () => {
  test('secure headers on every answer, errors included; no CORS unless CORS_ORIGINS is set', async () => {
    const res = await app.request('/v1/media', {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
    })
    expect(res.headers.get('access-control-allow-origin')).toBeNull()
    const answer = await app.request('/v2/nothing')
    expect(answer.headers.get('x-content-type-options')).toBe('nosniff')
    expect(answer.headers.get('content-security-policy')).toContain("default-src 'none'")
    expect(answer.headers.get('x-frame-options')).toBe('SAMEORIGIN')
  })

  test('CORS_ORIGINS lets the listed origins preflight (with Authorization), and no others', async () => {
    const open = await unitApp({ corsOrigins: ['https://app.example'] })
    const preflight = (origin: string) =>
      open.app.request('/v1/media', {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' },
      })
    const allowed = await preflight('https://app.example')
    expect(allowed.status).toBe(204)
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example')
    expect(allowed.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('authorization')
    expect((await preflight('https://evil.example')).headers.get('access-control-allow-origin')).toBeNull()
    open.store.close()
  })
})

describe('configuration', () => {
  const base = { S3_ACCESS_KEY_ID: 'a', S3_SECRET_ACCESS_KEY: 'b' }
  test('API_KEYS is read as tenant:key pairs; a bad pair is named and the key is never echoed', () => {
    expect(readConfig({ ...base, API_KEYS: 'acme:0123456789abcdef0123, beta:abcdefghijklmnopqrst' }).apiKeys).toEqual([
      { tenant: 'acme', key: '0123456789abcdef0123' },
      { tenant: 'beta', key: 'abcdefghijklmnopqrst' },
    ])
    for (const bad of ['acme', 'acme:short', ':0123456789abcdef0123', 'a b:0123456789abcdef0123']) {
      let message = ''
      try {
        readConfig({ ...base, API_KEYS: bad })
      } catch (error) {
        message = (error as Error).message
      }
      expect(message).toContain('API_KEYS')
      expect(message).not.toContain('0123456789abcdef0123')
    }
  })

  test('AUTH accepts keys or none; CORS_ORIGINS takes origins without paths', () => {
    expect(readConfig(base).auth).toBe('keys')
    expect(readConfig({ ...base, AUTH: 'none' }).auth).toBe('none')
    expect(() => readConfig({ ...base, AUTH: 'off' })).toThrow('AUTH')
    expect(readConfig({ ...base, CORS_ORIGINS: 'https://a.example, http://localhost:5173' }).corsOrigins).toEqual([
      'https://a.example',
      'http://localhost:5173',
    ])
    expect(() => readConfig({ ...base, CORS_ORIGINS: 'https://a.example/path' })).toThrow('CORS_ORIGINS')
  })
})

/**
 * The OpenAPI document, `GET /openapi.json`: valid OpenAPI 3.1 by a real validator, the same routes as the app
 * serves (both ways), our error body and authentication on each, and bodies that match what the API really answers.
 * No broker, no S3: `app.request()` on the unit app (tests/helpers/unit-app.ts).
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { Validator } from '@seriousme/openapi-schema-validator'
import * as v from 'valibot'
import { MediaSchema } from '../services/api/http/bodies.ts'
import { ErrorSchema } from '../services/api/http/errors.ts'
import type { OutboxMessage } from '../services/api/store/outbox.ts'
import { unitApp } from './helpers/unit-app.ts'

const { app, store, request } = await unitApp()
afterAll(() => store.close())

interface Operation {
  operationId: string
  security?: Record<string, string[]>[]
  parameters?: { in: string; name: string }[]
  requestBody?: { content: Record<string, { schema: Record<string, unknown> }> }
  responses: Record<string, { content?: Record<string, { schema: Record<string, unknown> }> }>
}
interface Document {
  openapi: string
  paths: Record<string, Record<string, Operation>>
  components: { schemas: Record<string, unknown>; securitySchemes: Record<string, { type: string; scheme: string }> }
}

const res = await app.request('/openapi.json')
const doc = (await res.json()) as Document
const operations = Object.entries(doc.paths).flatMap(([path, item]) =>
  Object.entries(item).map(([method, op]) => ({ path, method, op }))
)
const fail = (message: string): never => {
  throw new Error(message)
}
const operation = (method: string, path: string) =>
  doc.paths[path]?.[method] ?? fail(`${method} ${path} is not documented`)

describe('the document', () => {
  test('is served as JSON, open to anyone', () => {
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toContain('application/json')
  })

  test('is valid OpenAPI 3.1', async () => {
    const validator = new Validator()
    const result = await validator.validate(doc as unknown as Record<string, unknown>)
    expect(result.errors).toBeUndefined()
    expect(result.valid).toBe(true)
    expect(validator.version).toBe('3.1')
    expect(doc.openapi).toBe('3.1.0')
  })

  test('documents every route the app serves with its method, and nothing else', () => {
    // Middleware (secure headers, CORS, keys, rate limits, the admin guard) registers as ALL on a `*` path.
    const served = new Set(
      app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`)
    )
    const documented = new Set(operations.map(({ path, method }) => `${method.toUpperCase()} ${path}`))
    expect([...documented].sort()).toEqual([...served].sort())
    for (const route of [
      'POST /v1/media',
      'GET /v1/media/{id}/events',
      'GET /v1/media/{id}/outputs/{name}',
      'POST /v1/admin/keys',
      'GET /health',
      'GET /openapi.json',
    ]) {
      expect(served).toContain(route)
    }
  })

  test('is the same whether or not the admin API is enabled', async () => {
    const disabled = await unitApp({ adminToken: null })
    try {
      expect(await (await disabled.app.request('/openapi.json')).json()).toEqual(doc)
    } finally {
      await disabled.store.close()
    }
  })

  test('names each operation once', () => {
    const ids = operations.map(({ op }) => op.operationId)
    expect(new Set(ids).size).toBe(ids.length)
  })

  test('every $ref points at a component that exists', () => {
    const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) ?? []
    expect(refs.length).toBeGreaterThan(0)
    for (const ref of refs) {
      const name = /#\/components\/schemas\/([^"]+)"/.exec(ref)?.[1]
      expect(name && doc.components.schemas[name] ? ref : `dangling ${ref}`).toBe(ref)
    }
  })
})

describe('authentication', () => {
  test('both schemes are HTTP bearer', () => {
    expect(doc.components.securitySchemes).toMatchObject({
      apiKey: { type: 'http', scheme: 'bearer' },
      adminToken: { type: 'http', scheme: 'bearer' },
    })
  })

  test('media and webhook routes take an API key, admin routes the admin token, and the service routes nothing', () => {
    for (const { path, method, op } of operations) {
      const tenant = [
        '/v1/media',
        '/v1/webhooks',
        '/v1/presets',
        '/v1/uploads',
        '/v1/direct-uploads',
        '/v1/usage',
        '/v1/events',
        '/v1/ws',
      ].some((prefix) => path.startsWith(prefix))
      const expected = tenant ? [{ apiKey: [] }] : path.startsWith('/v1/admin') ? [{ adminToken: [] }] : []
      expect({ route: `${method} ${path}`, security: op.security }).toEqual({
        route: `${method} ${path}`,
        security: expected,
      })
      if (expected.length) expect(Object.keys(op.responses)).toContain('401')
    }
  })
})

describe('errors', () => {
  test("every error answer is our error body, never a validator's own", () => {
    let count = 0
    for (const { path, method, op } of operations) {
      for (const [status, response] of Object.entries(op.responses)) {
        // Health's and readiness's 503 are their own bodies, naming what is down.
        if (Number(status) < 400 || ((path === '/health' || path === '/readyz') && status === '503')) continue
        count++
        expect({ at: `${method} ${path} ${status}`, content: response.content }).toEqual({
          at: `${method} ${path} ${status}`,
          content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
        })
      }
      expect(Object.keys(op.responses)).toContain('500')
    }
    expect(count).toBeGreaterThan(operations.length)
    expect(operation('get', '/health').responses['503']?.content?.['application/json']?.schema).toEqual({
      $ref: '#/components/schemas/Health',
    })
    // hono-openapi's default validation error is {success, error[], data}: it echoes the input.
    expect(JSON.stringify(doc)).not.toContain('"success"')
    expect(doc.components.schemas.Error).toMatchObject({
      properties: { error: { required: ['code', 'message'] } },
      required: ['error'],
    })
  })

  test('the statuses the API answers for bad input are documented on the routes that answer them', async () => {
    expect(Object.keys(operation('get', '/v1/media/{id}').responses)).toContain('404')
    expect(Object.keys(operation('get', '/v1/admin/dead-letters').responses)).toContain('400')
    expect(Object.keys(operation('post', '/v1/media').responses)).toEqual(
      expect.arrayContaining(['400', '408', '413', '415', '429', '503'])
    )
    // …and the bodies of those answers are the documented Error.
    const malformed = await request('/v1/media/not-an-id')
    expect(malformed.status).toBe(404)
    expect(v.is(ErrorSchema, await malformed.json())).toBe(true)
  })
})

describe('routes', () => {
  test('an upload is a raw body or a multipart "file", both binary, with its file name headers', () => {
    const upload = operation('post', '/v1/media')
    expect(upload.requestBody?.content['application/octet-stream']?.schema).toMatchObject({
      type: 'string',
      format: 'binary',
    })
    expect(upload.requestBody?.content['multipart/form-data']?.schema).toMatchObject({
      type: 'object',
      properties: { file: { type: 'string', format: 'binary' } },
      required: ['file'],
    })
    expect(upload.parameters?.map((p) => `${p.in} ${p.name}`)).toEqual([
      'header Content-Disposition',
      'header X-Filename',
      'header X-Presets',
      'header Idempotency-Key',
      'query presets',
      'query priority',
    ])
    expect(upload.responses['202']?.content?.['application/json']?.schema).toEqual({
      $ref: '#/components/schemas/Accepted',
    })
    // A retry's answers: another request with its key under way, and the key used with another file.
    expect(Object.keys(upload.responses)).toEqual(expect.arrayContaining(['409', '422']))
  })

  test('events are text/event-stream and outputs are binary', () => {
    expect(Object.keys(operation('get', '/v1/media/{id}/events').responses['200']?.content ?? {})).toEqual([
      'text/event-stream',
    ])
    const output = operation('get', '/v1/media/{id}/outputs/{name}').responses['200']?.content ?? {}
    expect(Object.keys(output)).toContain('image/webp')
    for (const media of Object.values(output)) expect(media.schema).toEqual({ type: 'string', format: 'binary' })
  })

  test('path and query parameters come from the schemas the routes validate with', () => {
    expect(operation('get', '/v1/media/{id}/outputs/{name}').parameters).toEqual([
      expect.objectContaining({ in: 'header', name: 'Range' }),
      expect.objectContaining({ in: 'path', name: 'id', required: true, schema: { type: 'string', format: 'uuid' } }),
      expect.objectContaining({
        in: 'path',
        name: 'name',
        required: true,
        // The output's name, or its file name (what a playlist served there addresses).
        schema: expect.objectContaining({ pattern: '^[a-z0-9][a-z0-9_-]{0,31}(?:\\.[a-z0-9]{1,8})?$' }),
      }),
    ])
    // A signed link's expiry and signature are required: without them there is no way in.
    expect(operation('get', '/v1/links/{id}/{name}').parameters).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ in: 'query', name: 'expires', required: true }),
        expect.objectContaining({
          in: 'query',
          name: 'signature',
          required: true,
          schema: expect.objectContaining({ pattern: '^[A-Za-z0-9_-]{43}$' }),
        }),
      ])
    )
    expect(operation('get', '/v1/admin/dead-letters').parameters).toEqual([
      expect.objectContaining({ in: 'query', name: 'tenant' }),
      expect.objectContaining({ in: 'query', name: 'limit', schema: expect.objectContaining({ default: '100' }) }),
    ])
    expect(operation('post', '/v1/admin/keys').requestBody?.content['application/json']?.schema).toMatchObject({
      required: ['tenant'],
    })
  })

  test('a media as the API answers it is what the document says (the Media schema)', async () => {
    const id = crypto.randomUUID()
    const jobId = crypto.randomUUID()
    const outbox: OutboxMessage = {
      messageId: crypto.randomUUID(),
      jobId,
      queue: 'unit.media.images.request',
      type: 'job.request',
      body: new Uint8Array([123, 125]),
    }
    await store.media.create({
      id,
      tenant: 'unit',
      filename: 'a.jpg',
      kind: 'image',
      format: 'jpeg',
      size: 1,
      bucket: 'b',
      sourceKey: `unit/originals/${id}`,
      jobId,
      type: 'images',
      request: outbox,
    })
    const answer = await request(`/v1/media/${id}`)
    expect(answer.status).toBe(200)
    const checked = v.safeParse(MediaSchema, await answer.json())
    expect(checked.issues ? v.summarize(checked.issues) : 'valid').toBe('valid')
    expect(operation('get', '/v1/media/{id}').responses['200']?.content?.['application/json']?.schema).toEqual({
      $ref: '#/components/schemas/Media',
    })
  })
})

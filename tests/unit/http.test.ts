/**
 * HTTP behaviour that needs no broker and no S3: `app.request()` on `createApp(deps)` (no server, no port), with a
 * real SQLite store (tests/helpers/unit-app.ts).
 */
import { afterAll, describe, expect, test } from 'bun:test'
import * as v from 'valibot'
import { json } from '../../services/api/http/validate.ts'
import { ADMIN_TOKEN, unitApp } from '../helpers/unit-app.ts'

const { app, store, request } = await unitApp()
// No route takes a JSON body yet: this one shows the path later routes will use, through the app's own error handler.
app.post(
  '/test/json',
  json(v.object({ name: v.pipe(v.string('must be text'), v.nonEmpty('must not be empty')) })),
  (c) => c.json(c.req.valid('json'))
)
afterAll(() => store.close())

const admin = { authorization: `Bearer ${ADMIN_TOKEN}` }
type ErrorBody = { error: { code: string; message: string } }
/** Asserts our error body with `status` and `code`; returns its message. */
async function expectError(res: Response, status: number, code: string): Promise<string> {
  expect(res.status).toBe(status)
  const body = (await res.json()) as ErrorBody
  expect(body).toEqual({ error: { code, message: expect.any(String) } })
  return body.error.message
}

describe('media ids', () => {
  test('a malformed media id and an unknown one both answer 404 with the error body, on every route', async () => {
    for (const id of ['not-an-id', crypto.randomUUID()]) {
      for (const [method, path] of [
        ['GET', `/v1/media/${id}`],
        ['GET', `/v1/media/${id}/events`],
        ['GET', `/v1/media/${id}/outputs/thumb`],
        ['POST', `/v1/media/${id}/cancel`],
        ['DELETE', `/v1/media/${id}`],
      ] as const) {
        const message = await expectError(await request(path, { method }), 404, 'not_found')
        expect(message).toContain(id === 'not-an-id' ? 'id must be a UUID' : id)
      }
    }
  })

  test('a huge malformed id is not echoed back whole', async () => {
    const message = await expectError(await request(`/v1/media/${'x'.repeat(5000)}`), 404, 'not_found')
    expect(message).toContain('id')
    expect(message.length).toBeLessThan(200)
  })

  test('an output name outside the grammar answers 404 naming the name', async () => {
    // `thumb.webp` is a file name, which the route takes too (a playlist addresses its segments so).
    for (const name of ['Thumb', '_thumb', 'a'.repeat(33), 'thumb.', 'thumb.we.bp', 'thumb.WEBP']) {
      const res = await request(`/v1/media/${crypto.randomUUID()}/outputs/${name}`)
      expect(await expectError(res, 404, 'not_found')).toContain('name must be')
    }
  })
})

describe('admin', () => {
  test('without a token it answers 401 with WWW-Authenticate: Bearer and the error body', async () => {
    const res = await app.request('/v1/admin/dead-letters')
    expect(res.headers.get('www-authenticate')).toStartWith('Bearer')
    await expectError(res, 401, 'unauthorized')
  })

  test('limit=0, limit=x, limit=1001 and a repeated limit answer 400 naming limit', async () => {
    for (const search of ['limit=0', 'limit=x', 'limit=1001', 'limit=1&limit=2']) {
      const res = await app.request(`/v1/admin/dead-letters?${search}`, { headers: admin })
      expect(await expectError(res, 400, 'bad_request')).toContain('limit must be a whole number from 1 to 1000')
    }
  })

  test('a valid limit lists from the store', async () => {
    const res = await app.request('/v1/admin/dead-letters?limit=5', { headers: admin })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ deadLetters: [] })
  })

  test('olderThanSeconds that is not a whole number answers 400 naming it', async () => {
    for (const search of ['olderThanSeconds=x', 'olderThanSeconds=-1', 'olderThanSeconds=1.5']) {
      const res = await app.request(`/v1/admin/sweep?${search}`, { method: 'POST', headers: admin })
      expect(await expectError(res, 400, 'bad_request')).toContain('olderThanSeconds must be a whole number')
    }
  })

  test('with ADMIN_TOKEN unset, every path under /v1/admin answers 404 saying so, known route or not, token or not', async () => {
    const disabled = await unitApp({ adminToken: null })
    try {
      for (const [method, path] of [
        ['GET', '/v1/admin/dead-letters'],
        ['POST', '/v1/admin/keys'],
        ['GET', '/v1/admin/nothing'],
        ['GET', '/v1/admin'],
      ]) {
        const res = await disabled.app.request(path!, { method, headers: admin })
        expect(await expectError(res, 404, 'not_found')).toContain('ADMIN_TOKEN')
      }
    } finally {
      await disabled.store.close()
    }
  })

  test('a malformed dead-letter id and an unknown one both answer 404', async () => {
    for (const id of ['nope', crypto.randomUUID()]) {
      for (const method of ['GET', 'DELETE']) {
        await expectError(
          await app.request(`/v1/admin/dead-letters/${id}`, { method, headers: admin }),
          404,
          'not_found'
        )
      }
      await expectError(
        await app.request(`/v1/admin/dead-letters/${id}/redrive`, { method: 'POST', headers: admin }),
        404,
        'not_found'
      )
    }
  })
})

describe('routes and uploads', () => {
  test('an unknown route answers 404 with the error body', async () => {
    expect(await expectError(await app.request('/v2/nothing'), 404, 'not_found')).toContain('/v2/nothing')
  })

  test('an empty upload answers 400, before anything is stored', async () => {
    await expectError(await request('/v1/media', { method: 'POST', body: new Uint8Array(0) }), 400, 'empty_body')
    await expectError(
      await request('/v1/media', { method: 'POST', headers: { 'content-length': '0' } }),
      400,
      'empty_body'
    )
  })

  test('a text upload answers 415, before anything is stored', async () => {
    const res = await request('/v1/media', {
      method: 'POST',
      body: 'just some words, not a picture',
      headers: { 'content-type': 'image/png' },
    })
    expect(await expectError(res, 415, 'unsupported_media_type')).toContain('not an image, video or audio')
  })

  test('an SVG answers 415 naming SVG as refused, whatever it is declared as', async () => {
    const svg =
      '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><image href="file:///etc/passwd"/></svg>'
    const res = await request('/v1/media', {
      method: 'POST',
      body: svg,
      headers: { 'content-type': 'image/png', 'x-filename': 'logo.png' },
    })
    expect(await expectError(res, 415, 'unsupported_media_type')).toContain('SVG is refused')
  })
})

describe('json bodies', () => {
  const post = (body: string, type = 'application/json') =>
    app.request('/test/json', { method: 'POST', body, headers: { 'content-type': type } })

  test('a valid body reaches the handler as validated data', async () => {
    const res = await post('{"name":"x","extra":1}')
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ name: 'x' })
  })

  test('an invalid, missing or malformed body answers 400 with the error body naming the problem', async () => {
    expect(await expectError(await post('{"name":""}'), 400, 'bad_request')).toBe(
      'body field name must not be empty (got "")'
    )
    expect(await expectError(await post('{}'), 400, 'bad_request')).toBe('body field name is missing')
    expect(await expectError(await post('name=x', 'text/plain'), 400, 'bad_request')).toBe('body field name is missing')
    expect(await expectError(await post('{oops'), 400, 'bad_request')).toContain('Malformed JSON')
  })
})

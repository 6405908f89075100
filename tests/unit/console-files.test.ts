/**
 * How the API serves the console's files: the page and its script under the console's own Content-Security-Policy
 * (the API's JSON keeps its stricter one), gzipped when asked, revalidated by ETag, and nothing but its files.
 * No broker, no S3: the unit app, which builds the console with Bun's bundler as the API does.
 */
import { afterAll, expect, test } from 'bun:test'
import { gunzipSync } from 'node:zlib'
import { unitApp } from '../helpers/unit-app.ts'

const { app, store } = await unitApp()
afterAll(() => store.close())

test("the page and its script carry the console's policy; the API's answers keep theirs", async () => {
  const page = await app.request('/')
  expect(page.status).toBe(200)
  expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8')
  const html = await page.text()
  expect(html).toContain('<script type="module" src="/console/app.js"></script>')
  // Nothing inline for the policy to have to allow.
  expect(html).not.toMatch(/<script>|<style|\sstyle=|\son[a-z]+=/)
  const policy = page.headers.get('content-security-policy')!
  for (const rule of [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self' blob: data:",
    "frame-ancestors 'none'",
    "base-uri 'none'",
  ]) {
    expect(policy).toContain(rule)
  }
  expect(policy).not.toContain('unsafe')
  const api = await app.request('/v1/media')
  expect(api.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'; sandbox")
})

test('the script is gzipped when the browser takes gzip, and answered 304 while unchanged', async () => {
  const plain = await app.request('/console/app.js')
  expect(plain.headers.get('content-type')).toBe('text/javascript; charset=utf-8')
  const script = await plain.text()
  expect(script.length).toBeGreaterThan(10_000)
  const zipped = await app.request('/console/app.js', { headers: { 'accept-encoding': 'gzip, br' } })
  expect(zipped.headers.get('content-encoding')).toBe('gzip')
  expect(zipped.headers.get('vary')).toBe('Accept-Encoding')
  const bytes = new Uint8Array(await zipped.arrayBuffer())
  expect(bytes.length).toBeLessThan(script.length / 2)
  expect(gunzipSync(bytes).toString()).toBe(script)
  const etag = plain.headers.get('etag')!
  expect(etag).toMatch(/^"[0-9a-f]{24}"$/)
  const again = await app.request('/console/app.js', { headers: { 'if-none-match': etag } })
  expect(again.status).toBe(304)
  expect(await again.text()).toBe('')
})

test("only the console's own files are served", async () => {
  for (const path of ['/console/main.ts', '/console/../package.json', '/console/index.html', '/console/']) {
    const res = await app.request(path)
    expect(res.status).toBe(404)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('not_found')
  }
  expect((await app.request('/console/app.css')).headers.get('content-type')).toBe('text/css; charset=utf-8')
  expect((await app.request('/console/icon.svg')).headers.get('content-type')).toBe('image/svg+xml')
})

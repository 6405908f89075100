/**
 * A webhook attempt connects only to an address that was checked: the name is resolved once, every address is
 * judged, and the connection goes to one of those (no second resolution a rebinding name could answer differently).
 * Against a real HTTP server on loopback, with the resolver given so that names resolve as each case needs.
 */
import { afterAll, beforeAll, expect, test } from 'bun:test'
import type { Resolver } from '../../services/api/webhooks/destination.ts'
import { postPinned } from '../../services/api/webhooks/post.ts'

let server: ReturnType<typeof Bun.serve>
const seen: { host: string | null; body: string }[] = []
beforeAll(() => {
  server = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    async fetch(request) {
      seen.push({ host: request.headers.get('host'), body: await request.text() })
      return new Response('thanks', { status: 202, headers: { 'retry-after': '7' } })
    },
  })
})
afterAll(() => server.stop(true))

/** A resolver answering `answers` in turn (the last repeats), counting its calls. */
function resolver(...answers: string[][]): Resolver & { calls: number } {
  const resolve = Object.assign(
    async (_host: string) => {
      const addresses = answers[Math.min(resolve.calls++, answers.length - 1)]!
      return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))
    },
    { calls: 0 }
  )
  return resolve
}
const options = (resolve: Resolver, allowPrivate: boolean) => ({
  headers: { 'content-type': 'application/json' },
  timeoutMs: 1_000,
  rules: { allowHttp: true, allowPrivate },
  resolve,
})

test('the connection goes to the address the resolver gave, once asked; the name stays the Host', async () => {
  seen.length = 0
  const resolve = resolver(['127.0.0.1'])
  const answer = await postPinned(`http://hooks.example.test:${server.port}/x`, '{"a":1}', options(resolve, true))
  expect(answer).toEqual({ status: 202, retryAfter: '7', text: 'thanks' })
  expect(seen).toEqual([{ host: `hooks.example.test:${server.port}`, body: '{"a":1}' }])
  expect(resolve.calls).toBe(1)
})

test('a name resolving inward is refused before anything is sent', async () => {
  seen.length = 0
  const resolve = resolver(['93.184.216.34', '127.0.0.1'])
  await expect(postPinned(`http://hooks.example.test:${server.port}/x`, '{}', options(resolve, false))).rejects.toThrow(
    'resolves inward: 127.0.0.1 is a loopback address'
  )
  expect(seen).toEqual([])
})

test('a name that answers public to the check and loopback afterwards is never connected to loopback', async () => {
  seen.length = 0
  // A rebinding name: public first, then this machine.
  const resolve = resolver(['93.184.216.34'], ['127.0.0.1'])
  // 93.184.216.34 is unreachable from here (or answers nothing in time): the attempt fails, and loopback heard nothing.
  await expect(
    postPinned(`http://rebind.example.test:${server.port}/x`, '{}', options(resolve, false))
  ).rejects.toThrow()
  expect(resolve.calls).toBe(1)
  expect(seen).toEqual([])
})

test('an address written in the URL is checked too, however it is written', async () => {
  seen.length = 0
  for (const host of ['127.0.0.1', '[::ffff:7f00:1]', '[::ffff:127.0.0.1]', '2130706433', '0x7f.1']) {
    const resolve = resolver(['93.184.216.34'])
    await expect(postPinned(`http://${host}:${server.port}/x`, '{}', options(resolve, false))).rejects.toThrow(
      'loopback'
    )
    expect(resolve.calls).toBe(0)
  }
  expect(seen).toEqual([])
})

/**
 * RATE_LIMIT_PER_MINUTE is one budget per key, whichever routes the key's requests go to: every keyed route group
 * of the app draws on it (the groups are read from the app itself, so a group added later is held to it too).
 */
import { expect, test } from 'bun:test'
import { unitApp } from '../helpers/unit-app.ts'

const LIMIT = 12

test('a key has one request budget across every keyed route group, not one per group', async () => {
  const { app, store, request } = await unitApp({
    limits: { requestsPerMinute: LIMIT, concurrentUploads: 4, pace: { windowMs: 30_000, minBytesPerSecond: 1024 } },
    // tus itself is not under test: the guard in front of it is.
    tus: { handle: async () => new Response(null, { status: 204 }), cleanUp: async () => 0 },
  })
  try {
    // Every group of routes that takes an API key: the top of each /v1 path, but for the admin API (its own token)
    // and signed links (no key).
    const groups = [
      ...new Set(app.routes.map((r) => /^\/v1\/[^/:*]+/.exec(r.path)?.[0]).filter((p): p is string => !!p)),
    ]
      .filter((p) => p !== '/v1/admin' && p !== '/v1/links')
      .sort()
    expect(groups).toEqual([
      '/v1/direct-uploads',
      '/v1/events',
      '/v1/media',
      '/v1/presets',
      '/v1/uploads',
      '/v1/usage',
      '/v1/webhooks',
      '/v1/ws',
    ])
    const statuses: number[] = []
    for (let i = 0; i < LIMIT; i++)
      statuses.push(
        (await request(`${groups[i % groups.length]}/00000000-0000-4000-8000-000000000000`, { method: 'HEAD' })).status
      )
    expect(statuses.filter((s) => s === 429)).toEqual([])
    // Spent, across the groups together: each of them now refuses the key.
    for (const group of groups) {
      const refused = await request(group)
      expect({ group, status: refused.status }).toEqual({ group, status: 429 })
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('rate_limited')
    }
  } finally {
    await store.close()
  }
})

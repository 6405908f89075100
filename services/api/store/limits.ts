/**
 * Per-key limits counted in the database, so that every API instance on it counts the same: a key's requests in
 * each fixed minute, and its uploads in flight. Used on PostgreSQL, where several instances share the database;
 * SQLite means one instance, which counts in its own memory (http/limits.ts).
 */
import type { Db } from './db.ts'

export interface LimitRepo {
  /** Counts one request of `key` in the window of `windowMs` that holds now: its hits so far, and when it ends. */
  hit(key: string, windowMs: number): Promise<{ hits: number; resetAt: number }>
  /** Takes back one request (a request the limiter decided not to count). */
  unhit(key: string, windowMs: number): Promise<void>
  /**
   * Takes an upload slot `id` for `key` until `ttlMs` from now, unless `key` already holds `max` live ones: true
   * when taken. Exact across instances: the key's row is locked while its slots are counted.
   */
  takeSlot(key: string, id: string, max: number, ttlMs: number): Promise<boolean>
  /** Keeps a slot alive for `ttlMs` more (its upload still runs). */
  renewSlot(id: string, ttlMs: number): Promise<void>
  releaseSlot(id: string): Promise<void>
  /** Removes windows and slots that ended before `before`. */
  sweep(before: number): Promise<void>
}

export function createLimitRepo(db: Db): LimitRepo {
  const windowOf = (windowMs: number) => Math.floor(Date.now() / windowMs) * windowMs
  return {
    async hit(key, windowMs) {
      const start = windowOf(windowMs)
      const row = await db.get(
        `INSERT INTO rate_windows (key, window_start, hits) VALUES (?, ?, 1)
         ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_windows.hits + 1
         RETURNING hits`,
        [key, start]
      )
      return { hits: Number(row!.hits), resetAt: start + windowMs }
    },
    async unhit(key, windowMs) {
      await db.run('UPDATE rate_windows SET hits = hits - 1 WHERE key = ? AND window_start = ? AND hits > 0', [
        key,
        windowOf(windowMs),
      ])
    },
    takeSlot(key, id, max, ttlMs) {
      return db.transaction(async (tx) => {
        await tx.run('INSERT INTO upload_slot_keys (key) VALUES (?) ON CONFLICT DO NOTHING', [key])
        // Another instance taking a slot of this key waits here until this transaction ends, then counts it.
        await tx.get(`SELECT key FROM upload_slot_keys WHERE key = ? ${db.lockRows}`, [key])
        const now = Date.now()
        const live = await tx.get('SELECT COUNT(*) AS n FROM upload_slots WHERE key = ? AND until > ?', [key, now])
        if (Number(live!.n) >= max) return false
        await tx.run('INSERT INTO upload_slots (id, key, until) VALUES (?, ?, ?)', [id, key, now + ttlMs])
        return true
      })
    },
    async renewSlot(id, ttlMs) {
      await db.run('UPDATE upload_slots SET until = ? WHERE id = ?', [Date.now() + ttlMs, id])
    },
    async releaseSlot(id) {
      await db.run('DELETE FROM upload_slots WHERE id = ?', [id])
    },
    async sweep(before) {
      await db.run('DELETE FROM rate_windows WHERE window_start < ?', [before])
      await db.run('DELETE FROM upload_slots WHERE until < ?', [before])
    },
  }
}

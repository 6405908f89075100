/**
 * How many event streams and sockets one API key may hold open at once: counted in the database on PostgreSQL (across
 * every instance, as uploads in flight are: store/limits.ts), in memory on SQLite. A slot is renewed while its stream
 * lives, so one whose instance died frees itself within a minute.
 */
import type { LimitRepo } from '../store/limits.ts'

const SLOT_TTL_MS = 60_000

export interface StreamSlots {
  readonly max: number
  /** A slot for one stream of `keyId`, and the function that gives it back; null when the key holds `max` already. */
  take(keyId: string): Promise<(() => void) | null>
}

export function streamSlots(max: number, shared: LimitRepo | null): StreamSlots {
  if (shared) {
    return {
      max,
      async take(keyId) {
        const id = crypto.randomUUID()
        // Its own name space: a key's streams and its uploads are counted apart.
        if (!(await shared.takeSlot(`streams:${keyId}`, id, max, SLOT_TTL_MS))) return null
        const renew = setInterval(() => void shared.renewSlot(id, SLOT_TTL_MS).catch(() => {}), SLOT_TTL_MS / 3)
        let released = false
        return () => {
          if (released) return
          released = true
          clearInterval(renew)
          void shared.releaseSlot(id).catch(() => {})
        }
      },
    }
  }
  const open = new Map<string, number>()
  return {
    max,
    async take(keyId) {
      const held = open.get(keyId) ?? 0
      if (held >= max) return null
      open.set(keyId, held + 1)
      let released = false
      return () => {
        if (released) return
        released = true
        const left = (open.get(keyId) ?? 1) - 1
        if (left > 0) open.set(keyId, left)
        else open.delete(keyId)
      }
    },
  }
}

/**
 * The event log, followed live: one hub per API instance hands each tenant's events, in order and each once, to every
 * stream and socket of that tenant on this instance. A change announced here, or heard from another instance over the
 * fanout, makes the hub read the tenant's log past the last number it read: one read per change and tenant, however
 * many follow it. A heartbeat reads it too, which covers an announcement that was lost.
 *
 * A follower that resumes (from `after`) first replays the log from there, holding live events meanwhile; then it
 * gets the live ones it has not seen. Numbers follow commits (store/events.ts), so reading "past n" never skips one.
 */
import type { Changes } from '../jobs/changes.ts'
import type { EventRepo, LoggedEvent } from '../store/events.ts'

/** How many events one read takes. */
const PAGE = 500
/** How often a followed tenant's log is read even when nothing was announced. */
const HEARTBEAT_MS = 15_000

export interface Follower {
  /** Each event once, in order. Whatever it throws is the follower's business (it is caught and ignored). */
  deliver(event: LoggedEvent): void
}

/** Why a follower cannot resume where it asked: the events after it are gone, or it asks past the log's end. */
export class ResumeError extends Error {
  constructor(
    readonly why: 'expired' | 'ahead',
    readonly latest: number
  ) {
    super(
      why === 'expired'
        ? `the events after that id are no longer kept (the log keeps a window); read the media again, then follow from ${latest}`
        : `no event of this tenant has that id yet (the latest is ${latest})`
    )
  }
}

export interface EventHub {
  /**
   * Follows the tenant's log: from `after` (the last number the follower saw; replayed from the log), or from now
   * when null. Rejects with a ResumeError when `after` cannot be served. Resolves, once the replay is handed over,
   * with where the following starts (`after`, or the log's end when null: every event handed over is past it) and
   * the function that stops following.
   */
  follow(tenant: string, after: number | null, follower: Follower): Promise<{ from: number; stop: () => void }>
  close(): void
}

interface Tenant {
  followers: Set<Entry>
  /** The last number read for the live followers (null until the log's end is known). */
  last: number | null
  reading: Promise<void> | null
  again: boolean
  unwatch: () => void
  heartbeat: ReturnType<typeof setInterval>
}

interface Entry {
  follower: Follower
  /** The last number this follower got. */
  seen: number
  /** Events held while it replays. */
  held: LoggedEvent[] | null
}

export function createEventHub(deps: { events: EventRepo; changes: Pick<Changes, 'watchTenant'> }): EventHub {
  const tenants = new Map<string, Tenant>()

  const hand = (entry: Entry, event: LoggedEvent) => {
    if (event.seq <= entry.seen) return
    entry.seen = event.seq
    try {
      entry.follower.deliver(event)
    } catch {
      // a follower that fails is its own business (a closed socket is removed when it closes)
    }
  }

  /** Reads the tenant's log past `last` and hands it on; one read at a time, another after it if asked meanwhile. */
  function read(tenant: string, state: Tenant): void {
    if (state.reading) {
      state.again = true
      return
    }
    state.reading = (async () => {
      do {
        state.again = false
        for (;;) {
          const from = state.last
          if (from === null) return
          const events: LoggedEvent[] = await deps.events.after(tenant, from, PAGE).catch(() => [])
          for (const event of events) {
            state.last = event.seq
            for (const entry of state.followers) {
              if (entry.held) entry.held.push(event)
              else hand(entry, event)
            }
          }
          if (events.length < PAGE) break
        }
      } while (state.again)
    })().finally(() => {
      state.reading = null
    })
  }

  function tenantState(tenant: string): Tenant {
    let state = tenants.get(tenant)
    if (state) return state
    const created: Tenant = {
      followers: new Set(),
      last: null,
      reading: null,
      again: false,
      unwatch: () => {},
      heartbeat: setInterval(() => read(tenant, created), HEARTBEAT_MS),
    }
    created.unwatch = deps.changes.watchTenant(tenant, () => read(tenant, created))
    tenants.set(tenant, created)
    state = created
    return state
  }

  function drop(tenant: string, state: Tenant, entry: Entry) {
    state.followers.delete(entry)
    if (state.followers.size > 0 || tenants.get(tenant) !== state) return
    state.unwatch()
    clearInterval(state.heartbeat)
    tenants.delete(tenant)
  }

  return {
    async follow(tenant, after, follower) {
      const state = tenantState(tenant)
      const entry: Entry = { follower, seen: Number.POSITIVE_INFINITY, held: [] }
      state.followers.add(entry)
      try {
        // Watching first, then the log's end: a change committed in between is read by the live side.
        const bounds = await deps.events.bounds(tenant)
        if (state.last === null) {
          state.last = bounds.latest
          read(tenant, state) // what was announced while the bounds were read
        }
        if (after !== null) {
          if (after > bounds.latest) throw new ResumeError('ahead', bounds.latest)
          if (after < bounds.latest && (bounds.oldest === null || after + 1 < bounds.oldest))
            throw new ResumeError('expired', bounds.latest)
        }
        const from = after ?? bounds.latest
        entry.seen = from
        // The replay, up to at least where the live side began.
        for (;;) {
          const events = await deps.events.after(tenant, entry.seen, PAGE)
          for (const event of events) hand(entry, event)
          if (events.length < PAGE) break
        }
        const held = entry.held!
        entry.held = null
        for (const event of held) hand(entry, event)
        return { from, stop: () => drop(tenant, state, entry) }
      } catch (error) {
        drop(tenant, state, entry)
        throw error
      }
    },
    close() {
      for (const [tenant, state] of tenants) {
        state.unwatch()
        clearInterval(state.heartbeat)
        tenants.delete(tenant)
      }
    },
  }
}

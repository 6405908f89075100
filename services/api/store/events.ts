/**
 * The event log: every change of a media, written in the transaction of the change (jobs.ts), numbered per tenant
 * in commit order, and kept for a retention window. Clients follow it live (events/hub.ts) and resume from the last
 * number they saw.
 *
 * The number comes from the tenant's counter row, which each change's transaction updates: on PostgreSQL the row
 * stays locked until that transaction commits, so a later change of the same tenant gets a higher number only once
 * the earlier one is visible (a reader asking for "after n" never skips one still to commit); SQLite has one writer.
 */
import { iso, type Db, type Queryable, type Row } from './db.ts'
import type { MediaRecord } from './media-rows.ts'

/** What a change did to a media: its status (or a reprocess running), its creation, or its deletion. */
export type ChangeType =
  | 'created'
  | 'queued'
  | 'processing'
  | 'completed'
  | 'failed'
  | 'cancelled'
  | 'reprocessing'
  | 'deleted'

export interface LoggedEvent {
  tenant: string
  seq: number
  mediaId: string
  type: ChangeType
  /** The media as the store read it after the change (null for `deleted`). */
  media: MediaRecord | null
  at: string
}

/** Where a tenant's log stands: the first number still kept (null when none is) and the last one given. */
export interface LogBounds {
  oldest: number | null
  latest: number
}

export interface EventRepo {
  /** The tenant's events numbered after `after`, in order, at most `limit`. */
  after(tenant: string, after: number, limit: number): Promise<LoggedEvent[]>
  bounds(tenant: string): Promise<LogBounds>
  /** The number of the media's latest event still kept (0 when none is). */
  latestOf(mediaId: string): Promise<number>
  /** Removes events older than `olderThanMs`; resolves to how many. */
  prune(olderThanMs: number): Promise<number>
}

/** Appends one event in `tx` (the change's transaction); resolves to its number. */
export async function appendEvent(
  tx: Queryable,
  event: { tenant: string; mediaId: string; type: ChangeType; media: MediaRecord | null }
): Promise<number> {
  const row = await tx.get(
    `INSERT INTO event_counters (tenant, seq) VALUES (?, 1)
     ON CONFLICT (tenant) DO UPDATE SET seq = event_counters.seq + 1 RETURNING seq`,
    [event.tenant]
  )
  const seq = Number(row!.seq)
  await tx.run('INSERT INTO events (tenant, seq, media_id, type, data, at) VALUES (?, ?, ?, ?, ?, ?)', [
    event.tenant,
    seq,
    event.mediaId,
    event.type,
    JSON.stringify(event.media),
    Date.now(),
  ])
  return seq
}

/** The type of a change, from the media after it (null: it is gone). */
export function changeType(media: MediaRecord | null, created: boolean): ChangeType {
  if (!media) return 'deleted'
  if (created) return 'created'
  if (media.reprocess && !['completed', 'failed', 'cancelled'].includes(media.reprocess.status)) return 'reprocessing'
  return media.status
}

const toEvent = (r: Row): LoggedEvent => ({
  tenant: String(r.tenant),
  seq: Number(r.seq),
  mediaId: String(r.media_id),
  type: r.type as ChangeType,
  media: JSON.parse(String(r.data)) as MediaRecord | null,
  at: iso(r.at)!,
})

export function createEventRepo(db: Db): EventRepo {
  return {
    async after(tenant, after, limit) {
      const rows = await db.all('SELECT * FROM events WHERE tenant = ? AND seq > ? ORDER BY seq LIMIT ?', [
        tenant,
        after,
        limit,
      ])
      return rows.map(toEvent)
    },
    async bounds(tenant) {
      const oldest = await db.get('SELECT MIN(seq) AS seq FROM events WHERE tenant = ?', [tenant])
      const latest = await db.get('SELECT seq FROM event_counters WHERE tenant = ?', [tenant])
      return {
        oldest: oldest?.seq === null || oldest?.seq === undefined ? null : Number(oldest.seq),
        latest: latest ? Number(latest.seq) : 0,
      }
    },
    async latestOf(mediaId) {
      const row = await db.get('SELECT MAX(seq) AS seq FROM events WHERE media_id = ?', [mediaId])
      return row?.seq === null || row?.seq === undefined ? 0 : Number(row.seq)
    },
    prune: (olderThanMs) => db.run('DELETE FROM events WHERE at < ?', [Date.now() - olderThanMs]),
  }
}

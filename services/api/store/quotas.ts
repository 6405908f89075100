/**
 * Tenants' quotas, set by operators, and what each tenant uses against them, counted from the records themselves
 * (no counter to drift): the bytes of its originals, its media, and its jobs waiting for a processor.
 */
import type { Db } from './db.ts'

/** A quota's limits; null: no limit of that kind. */
export interface Quota {
  storedBytes: number | null
  media: number | null
  waitingJobs: number | null
}

export interface Usage {
  /** The bytes of the tenant's originals (what it uploaded; outputs are made from them). */
  storedBytes: number
  media: number
  /** Jobs queued and not yet taken by a processor. */
  waitingJobs: number
}

export interface QuotaRepo {
  get(tenant: string): Promise<Quota | null>
  set(tenant: string, quota: Quota): Promise<void>
  /** False when the tenant had none. */
  remove(tenant: string): Promise<boolean>
  usage(tenant: string): Promise<Usage>
  /** The tenant's interactive jobs waiting for a processor, counted up to `atMost` (the fair share's measure). */
  waitingInteractive(tenant: string, atMost: number): Promise<number>
}

export function createQuotaRepo(db: Db): QuotaRepo {
  const limit = (value: unknown) => (value === null || value === undefined ? null : Number(value))
  return {
    async get(tenant) {
      const row = await db.get('SELECT stored_bytes, media, waiting_jobs FROM tenant_quotas WHERE tenant = ?', [tenant])
      if (!row) return null
      return { storedBytes: limit(row.stored_bytes), media: limit(row.media), waitingJobs: limit(row.waiting_jobs) }
    },
    async set(tenant, quota) {
      await db.run(
        `INSERT INTO tenant_quotas (tenant, stored_bytes, media, waiting_jobs, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (tenant) DO UPDATE SET stored_bytes = excluded.stored_bytes, media = excluded.media,
           waiting_jobs = excluded.waiting_jobs, updated_at = excluded.updated_at`,
        [tenant, quota.storedBytes, quota.media, quota.waitingJobs, new Date().toISOString()]
      )
    },
    async remove(tenant) {
      return (await db.run('DELETE FROM tenant_quotas WHERE tenant = ?', [tenant])) > 0
    },
    async waitingInteractive(tenant, atMost) {
      // Counted no further than needed: a tenant with a backlog of thousands costs the same as one at the limit.
      const row = await db.get(
        `SELECT COUNT(*) AS n FROM (SELECT 1 FROM jobs JOIN media ON media.id = jobs.media_id
         WHERE media.tenant = ? AND jobs.status = 'queued' AND jobs.class = 'interactive' LIMIT ?) AS w`,
        [tenant, atMost]
      )
      return Number(row!.n)
    },
    async usage(tenant) {
      const stored = await db.get('SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM media WHERE tenant = ?', [
        tenant,
      ])
      const waiting = await db.get(
        `SELECT COUNT(*) AS n FROM jobs JOIN media ON media.id = jobs.media_id
         WHERE media.tenant = ? AND jobs.status = 'queued'`,
        [tenant]
      )
      return { storedBytes: Number(stored!.bytes), media: Number(stored!.n), waitingJobs: Number(waiting!.n) }
    },
  }
}

/**
 * The store: one database (a SQLite file, the embedded default, or PostgreSQL) and a repository per domain over it.
 * A change that spans domains (a result and its webhook events) commits in one transaction: the repositories share
 * the database and hand each other the transaction (jobs.ts). Every media a committed change touched is announced to
 * the store's listeners (`onMediaChanged`), so no caller has to remember to.
 */
import { createCoordinationRepo, type CoordinationRepo } from './coordination.ts'
import type { Db } from './db.ts'
import { createDeadLetterRepo, type DeadLetterRepo } from './dead-letters.ts'
import { createEventRepo, type EventRepo } from './events.ts'
import { createJobChanges, type MediaChange } from './jobs.ts'
import { createKeyRepo, type KeyRepo } from './keys.ts'
import { createLimitRepo, type LimitRepo } from './limits.ts'
import { createMediaRepo, type MediaRepo } from './media.ts'
import { createOutboxRepo, type OutboxRepo } from './outbox.ts'
import { openPostgresDb } from './postgres.ts'
import { createPresetRepo, type PresetRepo } from './presets.ts'
import { createQuotaRepo, type QuotaRepo } from './quotas.ts'
import { openSqliteDb } from './sqlite.ts'
import { createIdempotencyRepo, createUploadRepo, type IdempotencyRepo, type UploadRepo } from './uploads.ts'
import { createWebhookRepo, recordEvent, type WebhookRepo } from './webhooks.ts'

export type Database = { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string }

export interface StoreOptions {
  /** Names this API instance in the job history (which instance applied what) and as the holder of rounds. */
  origin?: string
}

export interface Store {
  /** Media and their jobs. */
  media: MediaRepo
  outbox: OutboxRepo
  deadLetters: DeadLetterRepo
  keys: KeyRepo
  /** Direct and tus uploads handed out. */
  uploads: UploadRepo
  idempotency: IdempotencyRepo
  webhooks: WebhookRepo
  /** Tenants' presets and their defaults. */
  presets: PresetRepo
  coordination: CoordinationRepo
  /**
   * Per-key limits counted in the database, on PostgreSQL (several instances share it); null on SQLite, which is one
   * instance, counting in its memory.
   */
  limits: LimitRepo | null
  /** Tenants' quotas and what they use. */
  quotas: QuotaRepo
  /** The event log: every change of a tenant's media, numbered (jobs.ts writes it). */
  events: EventRepo
  /**
   * Calls `listener` with each media a change of this store has touched (its tenant and event number), once the
   * change has committed, until the returned function is called.
   */
  onMediaChanged(listener: (change: MediaChange) => void): () => void
  ping(): Promise<void>
  close(): Promise<void>
}

export function createStore(db: Db, options: StoreOptions = {}): Store {
  const origin = options.origin ?? null
  const listeners = new Set<(change: MediaChange) => void>()
  const jobs = createJobChanges(db, {
    origin,
    recordEvent,
    announce: (change) => listeners.forEach((listener) => listener(change)),
  })
  return {
    media: createMediaRepo(db, jobs),
    outbox: createOutboxRepo(db),
    deadLetters: createDeadLetterRepo(db, jobs),
    keys: createKeyRepo(db),
    uploads: createUploadRepo(db),
    idempotency: createIdempotencyRepo(db),
    webhooks: createWebhookRepo(db),
    presets: createPresetRepo(db),
    coordination: createCoordinationRepo(db, origin),
    limits: db.kind === 'postgres' ? createLimitRepo(db) : null,
    quotas: createQuotaRepo(db),
    events: createEventRepo(db),
    onMediaChanged(listener) {
      listeners.add(listener)
      return () => void listeners.delete(listener)
    },
    async ping() {
      await db.get('SELECT 1 AS ok')
    },
    close: () => db.close(),
  }
}

export async function openStore(database: Database, options: StoreOptions = {}): Promise<Store> {
  if (database.kind === 'sqlite') return openSqliteStore(database.path, options)
  return createStore(await openPostgresDb(database.url), options)
}

/** A SQLite store, opened at once (tests use `:memory:`). */
export function openSqliteStore(path: string, options: StoreOptions = {}): Store {
  return createStore(openSqliteDb(path), options)
}

/** Where the records are, for logs: the file, or the PostgreSQL server and database without credentials. */
export function describeDatabase(database: Database): string {
  if (database.kind === 'sqlite') return database.path
  const url = new URL(database.url)
  return `postgres://${url.host}${url.pathname}${url.searchParams.has('search_path') ? ` (schema ${url.searchParams.get('search_path')})` : ''}`
}

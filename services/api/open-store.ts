/** Opens the store the configuration names: a SQLite file (the embedded default) or PostgreSQL. */
import { openPostgresDb } from './postgres-db.ts'
import { createSqlStore, type SqlStoreOptions } from './sql-store.ts'
import { openSqliteDb } from './sqlite-db.ts'
import type { Store } from './store.ts'

export type Database = { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string }

export async function openStore(database: Database, options: SqlStoreOptions = {}): Promise<Store> {
  if (database.kind === 'sqlite') return openSqliteStore(database.path, options)
  return createSqlStore(await openPostgresDb(database.url), options)
}

/** A SQLite store, opened at once (tests use `:memory:`). */
export function openSqliteStore(path: string, options: SqlStoreOptions = {}): Store {
  return createSqlStore(openSqliteDb(path), options)
}

/** Where the records are, for logs: the file, or the PostgreSQL server and database without credentials. */
export function describeDatabase(database: Database): string {
  if (database.kind === 'sqlite') return database.path
  const url = new URL(database.url)
  return `postgres://${url.host}${url.pathname}${url.searchParams.has('search_path') ? ` (schema ${url.searchParams.get('search_path')})` : ''}`
}

/**
 * The little the store needs from a SQL database, so that its queries are written once (sql-store.ts) for SQLite
 * (sqlite-db.ts) and PostgreSQL (postgres-db.ts). Queries use `?` placeholders; each database turns them into its own.
 */
export type Row = Record<string, unknown>
export type Param = string | number | null | Uint8Array

export interface Queryable {
  all(sql: string, params?: readonly Param[]): Promise<Row[]>
  /** The first row, or undefined. */
  get(sql: string, params?: readonly Param[]): Promise<Row | undefined>
  /** Runs a statement; resolves to how many rows it changed. */
  run(sql: string, params?: readonly Param[]): Promise<number>
}

export interface Db extends Queryable {
  readonly kind: 'sqlite' | 'postgres'
  /**
   * What follows a SELECT that reads rows it is about to change, in a transaction: PostgreSQL locks them
   * (`FOR UPDATE`), so that another instance's transaction waits and then sees the change. SQLite needs nothing: a
   * write transaction holds the whole database.
   */
  readonly lockRows: string
  /** The same, for work one instance takes while others skip what it holds (`FOR UPDATE SKIP LOCKED`). */
  readonly claimRows: string
  /** Runs `work` in one transaction, committed when it resolves and rolled back when it rejects. */
  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T>
  close(): Promise<void>
}

/** Reading rows the same from SQLite and PostgreSQL (which returns bigints as strings), and writing `IN (…)` lists. */

export const text = (value: unknown): string | null => (value === null || value === undefined ? null : String(value))
export const num = (value: unknown): number | null => (value === null || value === undefined ? null : Number(value))
export const isoNow = () => new Date().toISOString()
/** Epoch milliseconds as an ISO string, or null. */
export const iso = (ms: unknown): string | null =>
  ms === null || ms === undefined ? null : new Date(Number(ms)).toISOString()

/** `?, ?, ?` for an `IN (…)` of these values (one statement for a batch, not a round trip per row). */
export const placeholders = (values: readonly unknown[]) => values.map(() => '?').join(', ')

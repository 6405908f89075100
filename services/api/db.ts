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

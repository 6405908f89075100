/**
 * SQLite through `node:sqlite`, which both Bun and Deno provide: the embedded default. WAL mode and a busy timeout
 * let several API processes share one file; every transaction is IMMEDIATE (it takes the write lock at BEGIN), so a
 * read-modify-write is atomic across processes. Within a process the one connection runs one transaction at a time.
 */
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import type { Db, Param, Queryable, Row } from './db.ts'
import { SCHEMA_VERSION, SQLITE, stepsFrom, tooNew } from './migrations.ts'

/** Opens (creating it if need be) and migrates the database file at `path`, or an in-memory one (`:memory:`). */
export function openSqliteDb(path: string): Db {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
  const db = new DatabaseSync(path)
  db.exec(
    'PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;'
  )
  migrate(db, path)

  const statements = new Map<string, ReturnType<DatabaseSync['prepare']>>()
  const prepare = (sql: string) => {
    let statement = statements.get(sql)
    if (!statement) statements.set(sql, (statement = db.prepare(sql)))
    return statement
  }
  const direct: Queryable = {
    all: async (sql, params = []) => prepare(sql).all(...(params as Param[])) as Row[],
    get: async (sql, params = []) => prepare(sql).get(...(params as Param[])) as Row | undefined,
    run: async (sql, params = []) => Number(prepare(sql).run(...(params as Param[])).changes),
  }

  // While a transaction is open, nothing else may run on this connection (it would join the transaction), nor on
  // another connection of this process to the same file: its BEGIN IMMEDIATE would wait synchronously for a lock
  // that the awaiting transaction can then never release. So every call waits its turn, per file.
  const exclusive = turns(path)
  return {
    kind: 'sqlite',
    lockRows: '',
    claimRows: '',
    all: (sql, params) => exclusive(() => direct.all(sql, params)),
    get: (sql, params) => exclusive(() => direct.get(sql, params)),
    run: (sql, params) => exclusive(() => direct.run(sql, params)),
    transaction: (work) =>
      exclusive(async () => {
        db.exec('BEGIN IMMEDIATE')
        try {
          const result = await work(direct)
          db.exec('COMMIT')
          return result
        } catch (error) {
          db.exec('ROLLBACK')
          throw error
        }
      }),
    close: () => exclusive(async () => db.close()),
  }
}

/** The queue of calls on one database file in this process (an in-memory database is its own). */
const queues = new Map<string, { tail: Promise<unknown> }>()
function turns(path: string) {
  const queue =
    path === ':memory:'
      ? { tail: Promise.resolve() as Promise<unknown> }
      : (queues.get(path) ?? { tail: Promise.resolve() })
  if (path !== ':memory:') queues.set(path, queue)
  return <T>(work: () => Promise<T>): Promise<T> => {
    const turn = queue.tail.then(work)
    queue.tail = turn.catch(() => {})
    return turn
  }
}

function migrate(db: DatabaseSync, path: string): void {
  const version = () => (db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version
  if (version() > SCHEMA_VERSION) throw tooNew(version(), `the database ${path}`)
  if (version() === SCHEMA_VERSION) return
  // IMMEDIATE: two instances starting at once on a new file migrate one after the other; the second finds it done.
  db.exec('BEGIN IMMEDIATE')
  try {
    for (const step of stepsFrom(version(), SQLITE)) db.exec(step.sql)
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`)
    db.exec('COMMIT')
  } catch (error) {
    db.exec('ROLLBACK')
    throw error
  }
}

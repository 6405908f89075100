/**
 * PostgreSQL through `postgres` (porsager), which runs on Bun, Deno and Node: the database for several API
 * instances. Migrations run at start under an advisory lock, so instances starting together migrate once; row locks
 * (`FOR UPDATE`, `SKIP LOCKED`) keep two instances from changing the same job or taking the same work.
 */
import postgres from 'postgres'
import type { Db, Param, Queryable, Row } from './db.ts'
import { POSTGRES, SCHEMA_VERSION, stepsFrom, tooNew } from './migrations.ts'

/** The advisory lock migrations hold (any constant; the same in every instance). */
const MIGRATION_LOCK = 0x6d656469 // "medi"

/** `?` placeholders as PostgreSQL's `$1`, `$2`, …; the store's SQL has no `?` inside strings. */
const numbered = (sql: string) => {
  let n = 0
  return sql.replace(/\?/g, () => `$${++n}`)
}
/** Bytes go as a Buffer (bytea); everything else as given. */
const values = (params: readonly Param[]) =>
  params.map((p) => (p instanceof Uint8Array && !Buffer.isBuffer(p) ? Buffer.from(p) : p))

/**
 * Connects to `url` (a `postgres://` URL; `?search_path=<schema>` keeps the tables in a schema of their own) and
 * migrates. Rejects when the database cannot be reached within `connectTimeoutSeconds`.
 */
export async function openPostgresDb(
  url: string,
  options: { maxConnections?: number; connectTimeoutSeconds?: number } = {}
): Promise<Db> {
  const sql = postgres(url, {
    max: options.maxConnections ?? 10,
    connect_timeout: options.connectTimeoutSeconds ?? 10,
    // Idle connections are closed, so a restarted database or a failover is reconnected to on the next query.
    idle_timeout: 60,
    onnotice: () => {},
    // Every value is parsed by the store (Number(), JSON.parse): bigints come back as strings, bytea as Buffers.
    prepare: true,
  })
  const on = (client: postgres.Sql | postgres.TransactionSql): Queryable => ({
    all: async (text, params = []) =>
      [...(await client.unsafe(numbered(text), values(params) as postgres.ParameterOrJSON<never>[]))] as Row[],
    get: async (text, params = []) =>
      (await client.unsafe(numbered(text), values(params) as postgres.ParameterOrJSON<never>[]))[0] as Row | undefined,
    run: async (text, params = []) =>
      (await client.unsafe(numbered(text), values(params) as postgres.ParameterOrJSON<never>[])).count,
  })
  try {
    await migrate(sql)
  } catch (error) {
    await sql.end({ timeout: 1 })
    throw error
  }
  return {
    kind: 'postgres',
    lockRows: ' FOR UPDATE',
    claimRows: ' FOR UPDATE SKIP LOCKED',
    ...on(sql),
    transaction: (work) => sql.begin((tx) => work(on(tx))) as Promise<Awaited<ReturnType<typeof work>>>,
    close: () => sql.end({ timeout: 5 }),
  }
}

async function migrate(sql: postgres.Sql): Promise<void> {
  await sql.begin(async (tx) => {
    // Held until this transaction ends: a second instance starting now waits here, then finds the schema current.
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`
    await tx`CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`
    const [row] = await tx<{ version: number }[]>`SELECT version FROM schema_version`
    const current = row?.version ?? 0
    if (current > SCHEMA_VERSION) throw tooNew(current, 'the database')
    if (current === SCHEMA_VERSION) return
    for (const step of stepsFrom(current, POSTGRES)) await tx.unsafe(step.sql)
    if (row) await tx`UPDATE schema_version SET version = ${SCHEMA_VERSION}`
    else await tx`INSERT INTO schema_version (version) VALUES (${SCHEMA_VERSION})`
  })
}

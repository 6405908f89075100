/**
 * The PostgreSQL the tests use (TEST_DATABASE_URL, by default the machine's at 127.0.0.1:5432, database `test`).
 * Each call of `newPostgresSchema` makes a schema of its own, reached through `?search_path=`, and the run drops
 * every schema it made when it ends (tests/setup.ts).
 */
import postgres from 'postgres'

export const POSTGRES_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

const schemas = new Set<string>()

/** A fresh, empty schema; resolves to a DATABASE_URL whose tables live in it. */
export async function newPostgresSchema(): Promise<string> {
  const schema = `t_${crypto.randomUUID().replaceAll('-', '').slice(0, 12)}`
  await admin(async (sql) => {
    await sql`CREATE SCHEMA ${sql(schema)}`
  })
  schemas.add(schema)
  const url = new URL(POSTGRES_URL)
  url.searchParams.set('search_path', schema)
  return url.toString()
}

/** Drops the schemas made since the last call (and everything in them). */
export async function dropPostgresSchemas(): Promise<void> {
  if (!schemas.size) return
  const made = [...schemas]
  schemas.clear()
  await admin(async (sql) => {
    for (const schema of made) await sql`DROP SCHEMA IF EXISTS ${sql(schema)} CASCADE`
  })
}

/** Runs a query against a schema URL as the tests' own reader (e.g. the job history of a many-instance run). */
export async function withPostgres<T>(url: string, work: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 5 })
  try {
    return await work(sql)
  } finally {
    await sql.end({ timeout: 1 })
  }
}

async function admin(work: (sql: postgres.Sql) => Promise<void>): Promise<void> {
  try {
    await withPostgres(POSTGRES_URL, work)
  } catch (error) {
    const code = (error as { code?: string }).code
    if (code && /^[0-9A-Z]{5}$/.test(code)) throw error // PostgreSQL answered: the query's own error
    throw new Error(
      `PostgreSQL is not reachable at ${POSTGRES_URL.replace(/\/\/[^@]*@/, '//')} (${(error as Error).message}). ` +
        'Start it (Debian: `apt-get install postgresql`, then `service postgresql start`), or point TEST_DATABASE_URL at one.'
    )
  }
}

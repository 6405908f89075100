/**
 * Preloaded by `bun test` (bunfig.toml). Starts nothing: integration tests start the broker check and the S3 server
 * on first use (tests/helpers/infra.ts), so `bun test tests/unit` needs neither. At the end of the run it removes
 * any namespace left on the broker, drops the PostgreSQL schemas tests made, stops the S3 server, and removes the
 * data directories tests made.
 */
import { afterAll, setDefaultTimeout } from 'bun:test'
import { removeDataDirs } from './helpers/env.ts'
import { deleteLeftovers, deleteNamespaces, stopInfra } from './helpers/infra.ts'
import { dropPostgresSchemas } from './helpers/postgres.ts'

setDefaultTimeout(60_000)

afterAll(async () => {
  await deleteNamespaces()
  await deleteLeftovers()
  await dropPostgresSchemas()
  await stopInfra()
  removeDataDirs()
})

/**
 * api: the HTTP backend. Stores uploads in S3, records media and jobs, sends requests to the processors and applies
 * their updates and results. Env: see config.ts (SYSTEM, PORT, RABBITMQ_URL, S3_*, DATABASE_URL, DATA_DIR,
 * MAX_UPLOAD_BYTES).
 */
import { createLogger } from '@app/shared/ops'
import { readConfig, serverBodyCap, type Config } from './config.ts'
import { describeDatabase } from './store/open.ts'
import { serve } from './adapter/serve.ts'
import { startApi } from './start.ts'

if (import.meta.main) {
  let config: Config
  try {
    config = readConfig(process.env)
  } catch (error) {
    console.error(`api: ${(error as Error).message}`)
    process.exit(2)
  }
  const log = createLogger('api', config.log)
  let api: Awaited<ReturnType<typeof startApi>>
  try {
    api = await startApi(config, { log })
  } catch (error) {
    // startApi says which part (the database or the broker) could not be reached, and how to fix it. Like a bad
    // variable, a plain line on stderr: the service never ran, and a person starting it reads this.
    console.error(`api: cannot start: ${(error as Error).message}`)
    process.exit(1)
  }
  // On Bun or Deno (serve.ts). Uploads are limited by MAX_UPLOAD_BYTES while they stream, not by the server.
  const server = serve(api.app.fetch, {
    port: config.port,
    maxRequestBodySize: serverBodyCap(config.maxUploadBytes),
    idleTimeout: 120,
    websocket: api.websocket,
  })
  api.log.info(
    { port: server.port, system: config.system, database: describeDatabase(config.database) },
    `listening on http://127.0.0.1:${server.port} (namespace ${config.system}, database ${describeDatabase(config.database)})`
  )
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      void server
        .stop()
        .then(() => api.stop())
        .then(() => process.exit(0))
    })
  }
}

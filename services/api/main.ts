/**
 * api: the HTTP backend. Stores uploads in S3, records media and jobs, sends requests to the processors and applies
 * their updates and results. Env: see config.ts (SYSTEM, PORT, RABBITMQ_URL, S3_*, DATABASE_URL, DATA_DIR,
 * MAX_UPLOAD_BYTES).
 */
import { readConfig, serverBodyCap, type Config } from './config.ts'
import { startApi } from './service.ts'

if (import.meta.main) {
  let config: Config
  try {
    config = readConfig(process.env)
  } catch (error) {
    console.error(`api: ${(error as Error).message}`)
    process.exit(2)
  }
  let api: Awaited<ReturnType<typeof startApi>>
  try {
    api = await startApi(config)
  } catch (error) {
    console.error(
      `api: cannot start: cannot reach RabbitMQ at ${config.rabbitmqUrl.replace(/\/\/[^@]*@/, '//')} (${(error as Error).message}).\n` +
        '  Start it with `rabbitmq-server -detached` (Debian: `apt-get install rabbitmq-server`), or set RABBITMQ_URL.'
    )
    process.exit(1)
  }
  const server = Bun.serve({
    port: config.port,
    fetch: api.app.fetch,
    // Bun's default body limit is 128 MiB; uploads are limited by MAX_UPLOAD_BYTES instead, while they stream.
    maxRequestBodySize: serverBodyCap(config.maxUploadBytes),
    idleTimeout: 120,
  })
  console.log(`api: listening on http://127.0.0.1:${server.port} (namespace ${config.system}, database ${config.databasePath})`)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      void server.stop().then(() => api.stop()).then(() => process.exit(0))
    })
  }
}

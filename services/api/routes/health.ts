/** `GET /health`: 200 when the database, RabbitMQ and S3 all answer, 503 naming what is down; job counts by status. */
import { Hono } from 'hono'
import type { AppDeps } from '../app.ts'

export function healthRoutes(deps: AppDeps) {
  return new Hono().get('/health', async (c) => {
    const check = async (probe: () => Promise<void> | void) => {
      try {
        await probe()
        return { ok: true as const }
      } catch (error) {
        return { ok: false as const, error: (error as Error).message || (error as Error).name }
      }
    }
    const [database, s3] = await Promise.all([check(() => deps.store.ping()), check(() => deps.storage.ping())])
    const rabbitmq = deps.broker.isConnected() ? { ok: true as const } : { ok: false as const, error: 'not connected' }
    const checks = { database, rabbitmq, s3 }
    const down = Object.entries(checks).filter(([, r]) => !r.ok).map(([name]) => name)
    const jobs = database.ok ? await deps.store.countJobs() : null
    return c.json({ status: down.length ? 'unavailable' : 'ok', down, checks, jobs }, down.length ? 503 : 200)
  })
}

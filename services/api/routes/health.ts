/**
 * `GET /health`: 200 when the database, RabbitMQ and S3 all answer, 503 naming what is down (RabbitMQ counts as
 * down while an alarm blocks publishing). Also: job counts by status, jobs processing but silent past the stall
 * time (`stalled`, re-driven or failed by the sweep), and dead letters awaiting an operator. It needs no key and
 * tells nothing of any tenant: counts over all of them, and whether keys are required (`auth`).
 */
import { Hono } from 'hono'
import type { AppDeps } from '../app.ts'
import { HealthSchema, type Health } from '../bodies.ts'
import { OPEN, documenter, jsonAnswer } from '../openapi.ts'

const doc = documenter({ tag: 'service', security: OPEN, errors: [] })({
  operationId: 'health',
  summary: 'Whether the API and what it depends on are up',
  responses: {
    200: jsonAnswer('The database, RabbitMQ and S3 all answer.', HealthSchema),
    503: jsonAnswer('Something is down; `down` names it.', HealthSchema),
  },
})

export function healthRoutes(deps: AppDeps) {
  return new Hono().get('/health', doc, async (c) => {
    const check = async (probe: () => Promise<void> | void) => {
      try {
        await probe()
        return { ok: true as const }
      } catch (error) {
        return { ok: false as const, error: (error as Error).message || (error as Error).name }
      }
    }
    const [database, s3] = await Promise.all([check(() => deps.store.ping()), check(() => deps.storage.ping())])
    const blocked = deps.broker.blocked()
    const rabbitmq = !deps.broker.isConnected()
      ? { ok: false as const, error: 'not connected' }
      : blocked
        ? { ok: false as const, error: `refusing new messages (${blocked})` }
        : { ok: true as const }
    const checks = { database, rabbitmq, s3 }
    const down = Object.entries(checks).filter(([, r]) => !r.ok).map(([name]) => name)
    const jobs = database.ok ? await deps.store.countJobs() : null
    const stalled = database.ok ? await deps.store.countSilent(deps.stallMs) : null
    const deadLetters = database.ok ? await deps.store.countDeadLetters() : null
    // `auth` says whether the API asks for keys: `none` is an operator's explicit choice and should be seen.
    const body = { status: down.length ? 'unavailable' : 'ok', auth: deps.auth, down, checks, jobs, stalled, deadLetters } satisfies Health
    return c.json(body, down.length ? 503 : 200)
  })
}

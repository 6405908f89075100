/**
 * The routes for operators and their machines, none of which needs a key:
 * - `GET /health`, for people: 200 when the database, RabbitMQ and S3 all answer, 503 naming what is down (RabbitMQ
 *   counts as down while an alarm blocks publishing); job counts by status, jobs processing but silent past the
 *   stall time (`stalled`), dead letters awaiting an operator, and whether keys are required (`auth`). Counts over
 *   every tenant, and nothing of any one.
 * - `GET /livez`: 200 while the process answers at all (a supervisor restarts it when it does not).
 * - `GET /readyz`: 200 when the database, RabbitMQ and S3 answer now, else 503 naming what does not (a load
 *   balancer stops sending uploads meanwhile).
 * - `GET /metrics`: Prometheus text (see metrics.ts).
 */
import { Hono } from 'hono'
import { livez, metricsResponse, readyz, runChecks, type Check } from '@app/shared/ops'
import type { Registry } from '@app/shared/ops'
import type { AuthMode } from '../auth/access.ts'
import type { Broker } from '../jobs/broker.ts'
import type { Objects } from '../s3/objects.ts'
import type { Store } from '../store/open.ts'
import { HealthSchema, LiveSchema, ReadySchema, type Health } from '../http/bodies.ts'
import { OPEN, documenter, jsonAnswer } from '../http/openapi.ts'

const doc = documenter({ tag: 'service', security: OPEN, errors: [] })

/** What the API needs to take uploads: the database, RabbitMQ accepting messages, and S3. */
export interface HealthDeps {
  store: Pick<Store, 'ping' | 'media' | 'deadLetters'>
  broker: Pick<Broker, 'isConnected' | 'blocked'>
  objects: Pick<Objects, 'ping'>
  /** A processing job silent this long is stalled. */
  stallMs: number
  auth: AuthMode
  /** What `/metrics` serves. */
  registry: Registry
}

export function dependencies(
  deps: Pick<HealthDeps, 'store' | 'broker' | 'objects'>
): Record<'database' | 'rabbitmq' | 's3', Check> {
  return {
    database: () => deps.store.ping(),
    rabbitmq: () => {
      if (!deps.broker.isConnected()) throw new Error('not connected')
      const blocked = deps.broker.blocked()
      if (blocked) throw new Error(`refusing new messages (${blocked})`)
    },
    s3: () => deps.objects.ping(),
  }
}

export function healthRoutes(deps: HealthDeps) {
  return new Hono()
    .get(
      '/health',
      doc({
        operationId: 'health',
        summary: 'Whether the API and what it depends on are up, with job counts (for people)',
        responses: {
          200: jsonAnswer('The database, RabbitMQ and S3 all answer.', HealthSchema),
          503: jsonAnswer('Something is down; `down` names it.', HealthSchema),
        },
      }),
      async (c) => {
        const { down, checks } = await runChecks(dependencies(deps))
        const database = checks.database!.ok
        const jobs = database ? await deps.store.media.countJobs() : null
        const stalled = database ? await deps.store.media.countSilent(deps.stallMs) : null
        const deadLetters = database ? await deps.store.deadLetters.count() : null
        // `auth` says whether the API asks for keys: `none` is an operator's explicit choice and should be seen.
        const body = {
          status: down.length ? 'unavailable' : 'ok',
          auth: deps.auth,
          down,
          checks: { database: checks.database!, rabbitmq: checks.rabbitmq!, s3: checks.s3! },
          jobs,
          stalled,
          deadLetters,
        } satisfies Health
        return c.json(body, down.length ? 503 : 200)
      }
    )
    .get(
      '/livez',
      doc({
        operationId: 'livez',
        summary: 'Liveness: the process answers',
        responses: { 200: jsonAnswer('Alive.', LiveSchema) },
      }),
      (c) => c.json({ status: 'alive' as const }, livez().status)
    )
    .get(
      '/readyz',
      doc({
        operationId: 'readyz',
        summary: 'Readiness: the database, RabbitMQ and S3 answer now',
        responses: {
          200: jsonAnswer('Ready for uploads.', ReadySchema),
          503: jsonAnswer('Not ready; `down` names why.', ReadySchema),
        },
      }),
      async (c) => {
        const readiness = await runChecks(dependencies(deps))
        const { status, body } = readyz(readiness)
        const checks = {
          database: readiness.checks.database!,
          rabbitmq: readiness.checks.rabbitmq!,
          s3: readiness.checks.s3!,
        }
        return status === 200
          ? c.json({ ...body, status: 'ready' as const, checks }, 200)
          : c.json({ ...body, status: 'unavailable' as const, checks }, 503)
      }
    )
    .get(
      '/metrics',
      doc({
        operationId: 'metrics',
        summary: 'Prometheus metrics (text exposition format)',
        responses: { 200: { description: 'The metrics.', content: { 'text/plain': { schema: { type: 'string' } } } } },
      }),
      () => metricsResponse(deps.registry)
    )
}

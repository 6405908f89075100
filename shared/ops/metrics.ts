/**
 * Prometheus metrics, through prom-client (never hand-formatted text). Each service keeps its own registry, so that
 * several services in one process (the tests) do not mix their series, and labels every series with its name.
 * Labels stay low-cardinality: kinds, stages, outcomes, operations; never a job, media or tenant id.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'

export { Counter, Gauge, Histogram, type Registry } from 'prom-client'

/** Job and stage durations, in seconds: from a small image's tenth of a second to a four-hour transcode. */
export const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400]
/** Sizes in bytes, 1 KiB to 4 GiB by powers of four. */
export const SIZE_BUCKETS = Array.from({ length: 12 }, (_, i) => 1024 * 4 ** i)

/** A registry for `service`, with the process metrics (memory, CPU, event-loop lag, heap) every service exports. */
export function createRegistry(service: string): Registry {
  const registry = new Registry()
  registry.setDefaultLabels({ service })
  collectDefaultMetrics({ register: registry })
  return registry
}

/** The metrics every service has: its dependencies' errors by operation, and what its readiness answers. */
export function commonMetrics(registry: Registry) {
  const registers = [registry]
  return {
    s3Errors: new Counter({
      name: 'media_s3_errors_total',
      help: 'S3 requests that failed (after the client retries), by operation',
      labelNames: ['operation'] as const,
      registers,
    }),
    brokerErrors: new Counter({
      name: 'media_broker_errors_total',
      help: 'RabbitMQ failures, by operation (publish, connection, channel, consume, settle)',
      labelNames: ['operation'] as const,
      registers,
    }),
    ready: new Gauge({ name: 'media_ready', help: '1 when the last readiness check passed, else 0', registers }),
  }
}
export type CommonMetrics = ReturnType<typeof commonMetrics>

/** The registry's metrics as Prometheus text, as a response. */
export async function metricsResponse(registry: Registry): Promise<Response> {
  return new Response(await registry.metrics(), { headers: { 'content-type': registry.contentType } })
}

/**
 * Prometheus metrics, through prom-client (never hand-formatted text). Each service keeps its own registry, so that
 * several services in one process (the tests) do not mix their series, and labels every series with its name.
 * Labels stay low-cardinality: kinds, stages, outcomes, operations; never a job, media or tenant id.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

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
  // V8's heap spaces, which Bun answers by walking its whole heap: 12-18 ms of CPU a scrape with the API's heap, the
  // event loop stalled meanwhile (and most of the API's CPU in a benchmark that scraped ten times a second). The heap's
  // size and use stay, from process.memoryUsage().
  for (const name of HEAP_SPACE_METRICS) registry.removeSingleMetric(name)
  return registry
}

const HEAP_SPACE_METRICS = [
  'nodejs_heap_space_size_total_bytes',
  'nodejs_heap_space_size_used_bytes',
  'nodejs_heap_space_size_available_bytes',
]

/**
 * Metric makers bound to one registry, so that a service's list of metrics reads as a list: name, help, labels
 * (and buckets); each returns prom-client's own Counter, Gauge or Histogram.
 */
export function metricsOn(registry: Registry) {
  const registers = [registry]
  return {
    counter: <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
      new Counter<L>({ name, help, labelNames, registers }),
    histogram: <L extends string>(name: string, help: string, labelNames: readonly L[], buckets: number[]) =>
      new Histogram<L>({ name, help, labelNames, buckets, registers }),
    /** A gauge whose value is read when Prometheus scrapes (`collect`). */
    gauge: <L extends string>(
      name: string,
      help: string,
      labelNames: readonly L[],
      collect: (this: Gauge<L>) => void | Promise<void>
    ) => new Gauge<L>({ name, help, labelNames, registers, collect }),
  }
}

/**
 * The metrics every service has: its dependencies' errors by operation, and whether it is ready, checked at each
 * scrape (`ready`: what `/readyz` would answer now).
 */
export function commonMetrics(registry: Registry, ready: () => Promise<boolean>) {
  const { counter, gauge } = metricsOn(registry)
  return {
    s3Errors: counter('media_s3_errors_total', 'S3 requests that failed (after the client retries), by operation', [
      'operation',
    ]),
    brokerErrors: counter(
      'media_broker_errors_total',
      'RabbitMQ failures, by operation (publish, connection, channel, consume, settle)',
      ['operation']
    ),
    ready: gauge(
      'media_ready',
      '1 when the service is ready (what /readyz answers at the scrape), else 0',
      [],
      async function () {
        this.set((await ready().catch(() => false)) ? 1 : 0)
      }
    ),
  }
}
export type CommonMetrics = ReturnType<typeof commonMetrics>

/** The registry's metrics as Prometheus text, as a response. */
export async function metricsResponse(registry: Registry): Promise<Response> {
  return new Response(await registry.metrics(), { headers: { 'content-type': registry.contentType } })
}

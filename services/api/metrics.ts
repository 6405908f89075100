/**
 * The API's metrics. Counters and histograms are counted where things happen (uploads, results applied, stall
 * actions, HTTP requests); gauges of shared state (jobs by status, stalled jobs, the outbox, the broker's queues) are
 * read when Prometheus scrapes. Every API instance reads the same database and broker, so those gauges agree across
 * instances: aggregate them with `max`, not `sum` (the counters do sum).
 */
import { MEDIA_KINDS, type JobStatus, type MediaType } from '@app/shared'
import { Counter, DURATION_BUCKETS, Gauge, Histogram, commonMetrics, type Registry } from '@app/shared/ops'
import type { QueueStats } from './broker.ts'
import type { Applied, OutboxBacklog } from './store.ts'

/** What the scrape-time gauges read. */
export interface MetricSources {
  jobsByType(): Promise<{ type: MediaType; status: JobStatus; count: number }[]>
  stalled(): Promise<number>
  outbox(): Promise<OutboxBacklog>
  queues(): Promise<QueueStats[]>
}

/** What an upload ended as, by its answer's status: the `outcome` label. */
export function uploadOutcome(status: number): string {
  const outcomes: Record<number, string> = { 202: 'accepted', 400: 'invalid', 408: 'too_slow', 413: 'too_large', 415: 'unsupported', 429: 'limited', 503: 'unavailable' }
  return outcomes[status] ?? 'failed'
}

export function apiMetrics(registry: Registry, sources: MetricSources, onError: (error: Error) => void = () => {}) {
  const registers = [registry]
  const common = commonMetrics(registry)
  const uploads = new Counter({
    name: 'media_uploads_total',
    help: 'Uploads answered, by kind (unknown until sniffed) and outcome (accepted, invalid, too_slow, too_large, unsupported, limited, unavailable, failed)',
    labelNames: ['kind', 'outcome'] as const,
    registers,
  })
  const uploadBytes = new Counter({
    name: 'media_upload_bytes_total',
    help: 'Bytes received in uploads, by kind and outcome',
    labelNames: ['kind', 'outcome'] as const,
    registers,
  })
  const finished = new Counter({
    name: 'media_jobs_finished_total',
    help: 'Jobs that reached a final state, by kind and status, counted by the instance that applied it',
    labelNames: ['kind', 'status'] as const,
    registers,
  })
  const duration = new Histogram({
    name: 'media_job_duration_seconds',
    help: 'Time from the upload accepted to the final state, by kind and status',
    labelNames: ['kind', 'status'] as const,
    buckets: DURATION_BUCKETS,
    registers,
  })
  const queued = new Histogram({
    name: 'media_job_queued_seconds',
    help: 'Time from the upload accepted to the first word from a processor, by kind',
    labelNames: ['kind'] as const,
    buckets: DURATION_BUCKETS,
    registers,
  })
  const stallActions = new Counter({
    name: 'media_stall_actions_total',
    help: 'What the stall sweep did to silent jobs: redriven or failed',
    labelNames: ['action'] as const,
    registers,
  })
  const requests = new Counter({
    name: 'media_http_requests_total',
    help: 'HTTP requests answered, by method, route pattern and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers,
  })
  const requestSeconds = new Histogram({
    name: 'media_http_request_duration_seconds',
    help: 'Time to answer an HTTP request (to its headers; a stream runs on), by method and route pattern',
    labelNames: ['method', 'route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers,
  })

  // The shared-state gauges, read once per scrape (all of them from one snapshot); a failed read leaves them out
  // of that scrape rather than failing it.
  let cached: { at: number; snapshot: Promise<Snapshot | null> } | undefined
  const read = () => {
    if (!cached || performance.now() - cached.at > 1_000) cached = { at: performance.now(), snapshot: takeSnapshot() }
    return cached.snapshot
  }
  const takeSnapshot = async (): Promise<Snapshot | null> => {
    try {
      const [jobs, stalled, outbox, queues] = await Promise.all([sources.jobsByType(), sources.stalled(), sources.outbox(), sources.queues()])
      return { jobs, stalled, outbox, queues }
    } catch (error) {
      onError(error as Error)
      return null
    }
  }
  const gauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge, s: Snapshot) => void) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers,
      async collect() {
        this.reset()
        const s = await read()
        if (s) fill(this, s)
      },
    })
  gauge('media_jobs', 'Jobs in the database by kind and status (the same on every instance: use max)', ['kind', 'status'], (g, s) => {
    for (const row of s.jobs) g.set({ kind: MEDIA_KINDS[row.type], status: row.status }, row.count)
  })
  gauge('media_jobs_stalled', 'Jobs processing with no word from a processor past STALL_SECONDS (use max)', [], (g, s) => g.set(s.stalled))
  gauge('media_outbox_backlog', 'Requests accepted but not yet confirmed by the broker (use max)', [], (g, s) => g.set(s.outbox.count))
  gauge('media_outbox_oldest_age_seconds', 'Age of the oldest request not yet confirmed by the broker; 0 when none (use max)', [], (g, s) =>
    g.set(s.outbox.oldestAt === null ? 0 : Math.max(0, (Date.now() - s.outbox.oldestAt) / 1000))
  )
  gauge('media_queue_messages', 'Messages ready in each queue, from the broker (queue: request, updates, results, dead)', ['kind', 'queue'], (g, s) => {
    for (const q of s.queues) g.set({ kind: MEDIA_KINDS[q.type], queue: q.queue }, q.messages)
  })
  gauge('media_queue_consumers', 'Consumers of each queue, from the broker', ['kind', 'queue'], (g, s) => {
    for (const q of s.queues) g.set({ kind: MEDIA_KINDS[q.type], queue: q.queue }, q.consumers)
  })

  return {
    ...common,
    upload(kind: string, outcome: string, bytes: number): void {
      uploads.inc({ kind, outcome })
      if (bytes > 0) uploadBytes.inc({ kind, outcome }, bytes)
    },
    /** Observes what applying a message did: a job's first word from a processor, or its final state. */
    applied(applied: Applied | undefined): void {
      if (!applied?.changed || applied.status === applied.previous) return
      const kind = MEDIA_KINDS[applied.type]
      const seconds = Math.max(0, (Date.now() - Date.parse(applied.createdAt)) / 1000)
      if (applied.previous === 'queued' && applied.status === 'processing') queued.observe({ kind }, seconds)
      if (applied.status === 'completed' || applied.status === 'failed' || applied.status === 'cancelled') {
        finished.inc({ kind, status: applied.status })
        duration.observe({ kind, status: applied.status }, seconds)
      }
    },
    stallAction(action: 'redriven' | 'failed'): void {
      stallActions.inc({ action })
    },
    request(method: string, route: string, status: number, seconds: number): void {
      requests.inc({ method, route, status: String(status) })
      requestSeconds.observe({ method, route }, seconds)
    },
  }
}
export type ApiMetrics = ReturnType<typeof apiMetrics>

interface Snapshot {
  jobs: Awaited<ReturnType<MetricSources['jobsByType']>>
  stalled: number
  outbox: OutboxBacklog
  queues: QueueStats[]
}

/**
 * The API's metrics. Counters and histograms are counted where things happen (uploads, results applied, stall
 * actions, HTTP requests); gauges of shared state (jobs by status, stalled jobs, the outbox, the broker's queues) are
 * read when Prometheus scrapes. Every API instance reads the same database and broker, so those gauges agree across
 * instances: aggregate them with `max`, not `sum` (the counters do sum).
 */
import { JOB_STATUSES, MEDIA_KINDS, MEDIA_TYPES, type JobStatus, type MediaType } from '@app/shared'
import { DURATION_BUCKETS, commonMetrics, metricsOn, type Gauge, type Registry } from '@app/shared/ops'
import type { QueueStats } from './jobs/broker.ts'
import type { Applied } from './store/jobs.ts'
import type { OutboxBacklog } from './store/outbox.ts'

/** What the scrape-time gauges read. */
export interface MetricSources {
  jobsByType(): Promise<{ type: MediaType; status: JobStatus; count: number }[]>
  stalled(): Promise<number>
  deadLetters(): Promise<number>
  outbox(): Promise<OutboxBacklog>
  queues(): Promise<QueueStats[]>
  /** What `/readyz` would answer now. */
  ready(): Promise<boolean>
}

/** What an upload ended as, by its answer's status: the `outcome` label. */
export function uploadOutcome(status: number): string {
  const outcomes: Record<number, string> = {
    202: 'accepted',
    400: 'invalid',
    408: 'too_slow',
    413: 'too_large',
    415: 'unsupported',
    429: 'limited',
    503: 'unavailable',
  }
  return outcomes[status] ?? 'failed'
}

/**
 * The API's metrics. The scrape-time gauges read `sources` once given (`readFrom`: they need the broker, which counts
 * its errors here first); until then a scrape shows them empty.
 */
export function apiMetrics(registry: Registry, onError: (error: Error) => void = () => {}) {
  let sources: MetricSources | undefined
  const common = commonMetrics(registry, async () => (sources ? sources.ready() : false))
  const { counter, gauge, histogram } = metricsOn(registry)
  const uploads = counter(
    'media_uploads_total',
    'Uploads answered, by kind (unknown until sniffed) and outcome (accepted, invalid, too_slow, too_large, unsupported, limited, unavailable, failed)',
    ['kind', 'outcome']
  )
  const uploadBytes = counter('media_upload_bytes_total', 'Bytes received in uploads, by kind and outcome', [
    'kind',
    'outcome',
  ])
  const finished = counter(
    'media_jobs_finished_total',
    'Jobs that reached a final state, by kind and status, counted by the instance that applied it',
    ['kind', 'status']
  )
  const duration = histogram(
    'media_job_duration_seconds',
    'Time from the upload accepted to the final state, by kind and status',
    ['kind', 'status'],
    DURATION_BUCKETS
  )
  const queued = histogram(
    'media_job_queued_seconds',
    'Time from the job queued to the first word from a processor, by kind and class (interactive, bulk)',
    ['kind', 'class'],
    DURATION_BUCKETS
  )
  const webhookAttempts = counter(
    'media_webhook_attempts_total',
    'Webhook delivery attempts, by outcome (delivered, retry, failed)',
    ['outcome']
  )
  const stallActions = counter(
    'media_stall_actions_total',
    'What the stall sweep did to silent jobs: redriven or failed',
    ['action']
  )
  const requests = counter('media_http_requests_total', 'HTTP requests answered, by method, route pattern and status', [
    'method',
    'route',
    'status',
  ])
  const requestSeconds = histogram(
    'media_http_request_duration_seconds',
    'Time to answer an HTTP request (to its headers; a stream runs on), by method and route pattern',
    ['method', 'route'],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
  )

  // The shared-state gauges, read once per scrape (all of them from one snapshot); a failed read leaves them out
  // of that scrape rather than failing it.
  let cached: { at: number; snapshot: Promise<Snapshot | null> } | undefined
  const read = () => {
    if (!cached || performance.now() - cached.at > 1_000) cached = { at: performance.now(), snapshot: takeSnapshot() }
    return cached.snapshot
  }
  const takeSnapshot = async (): Promise<Snapshot | null> => {
    const from = sources
    if (!from) return null
    try {
      const [jobs, stalled, deadLetters, outbox, queues] = await Promise.all([
        from.jobsByType(),
        from.stalled(),
        from.deadLetters(),
        from.outbox(),
        from.queues(),
      ])
      return { jobs, stalled, deadLetters, outbox, queues }
    } catch (error) {
      onError(error as Error)
      return null
    }
  }
  /** A gauge filled from the scrape's snapshot (reset first, so a series that went away does not linger). */
  const shared = <L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    fill: (g: Gauge<L>, s: Snapshot) => void
  ) =>
    gauge(name, help, labelNames, async function () {
      this.reset()
      const s = await read()
      if (s) fill(this, s)
    })
  shared(
    'media_jobs',
    'Jobs in the database by kind and status (the same on every instance: use max)',
    ['kind', 'status'],
    (g, s) => {
      // Every combination, 0 where there are none: an alert on "failed > 0" needs the series to exist before.
      for (const type of MEDIA_TYPES) for (const status of JOB_STATUSES) g.set({ kind: MEDIA_KINDS[type], status }, 0)
      for (const row of s.jobs) g.set({ kind: MEDIA_KINDS[row.type], status: row.status }, row.count)
    }
  )
  shared(
    'media_jobs_stalled',
    'Jobs processing with no word from a processor past STALL_SECONDS (use max)',
    [],
    (g, s) => g.set(s.stalled)
  )
  shared('media_dead_letters', 'Dead letters kept for an operator to re-drive or discard (use max)', [], (g, s) =>
    g.set(s.deadLetters)
  )
  shared('media_outbox_backlog', 'Requests accepted but not yet confirmed by the broker (use max)', [], (g, s) =>
    g.set(s.outbox.count)
  )
  shared(
    'media_outbox_oldest_age_seconds',
    'Age of the oldest request not yet confirmed by the broker; 0 when none (use max)',
    [],
    (g, s) => g.set(s.outbox.oldestAt === null ? 0 : Math.max(0, (Date.now() - s.outbox.oldestAt) / 1000))
  )
  shared(
    'media_queue_messages',
    'Messages ready in each queue, from the broker (queue: request (interactive work), bulk, updates, results, dead)',
    ['kind', 'queue'],
    (g, s) => {
      for (const q of s.queues) g.set({ kind: MEDIA_KINDS[q.type], queue: q.queue }, q.messages)
    }
  )
  shared('media_queue_consumers', 'Consumers of each queue, from the broker', ['kind', 'queue'], (g, s) => {
    for (const q of s.queues) g.set({ kind: MEDIA_KINDS[q.type], queue: q.queue }, q.consumers)
  })

  return {
    ...common,
    /** Where the scrape-time gauges read from, from now on. */
    readFrom(given: MetricSources): void {
      sources = given
    },
    upload(kind: string, outcome: string, bytes: number): void {
      uploads.inc({ kind, outcome })
      if (bytes > 0) uploadBytes.inc({ kind, outcome }, bytes)
    },
    /** Observes what applying a message did: a job's first word from a processor, or its final state. */
    applied(applied: Applied | undefined): void {
      if (!applied?.changed || applied.status === applied.previous) return
      const kind = MEDIA_KINDS[applied.type]
      const seconds = Math.max(0, (Date.now() - Date.parse(applied.createdAt)) / 1000)
      if (applied.previous === 'queued' && applied.status === 'processing')
        queued.observe({ kind, class: applied.cls }, seconds)
      if (applied.status === 'completed' || applied.status === 'failed' || applied.status === 'cancelled') {
        finished.inc({ kind, status: applied.status })
        duration.observe({ kind, status: applied.status }, seconds)
      }
    },
    webhookAttempt(outcome: 'delivered' | 'retry' | 'failed'): void {
      webhookAttempts.inc({ outcome })
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
  deadLetters: number
  outbox: OutboxBacklog
  queues: QueueStats[]
}

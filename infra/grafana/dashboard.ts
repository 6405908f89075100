/**
 * The Grafana dashboard of the media pipeline, written as a list of panels and turned into Grafana's JSON
 * (`media-pipeline.json`, beside this file) by `bun infra/grafana/dashboard.ts`. tests/monitoring.test.ts checks that
 * the JSON is current, that every query is valid PromQL (promtool) and names only metrics the services export.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

export interface Query {
  expr: string
  legend: string
}
export interface Panel {
  title: string
  description: string
  unit: string
  queries: Query[]
  /** A single number (the latest) rather than a graph. */
  stat?: boolean
}
export interface Row {
  title: string
  panels: Panel[]
}

const rate = (series: string) => `rate(${series}[$__rate_interval])`
const quantile = (q: number, histogram: string, by: string, filter = '') =>
  `histogram_quantile(${q}, sum by (${by}, le) (${rate(`${histogram}_bucket${filter}`)}))`

export const ROWS: Row[] = [
  {
    title: 'Uploads',
    panels: [
      {
        title: 'Uploads by outcome',
        description:
          'Uploads answered per second. accepted: queued; the rest were refused (4xx) or failed on our side (unavailable, failed).',
        unit: 'reqps',
        queries: [{ expr: `sum by (outcome) (${rate('media_uploads_total')})`, legend: '{{outcome}}' }],
      },
      {
        title: 'Bytes received',
        description: 'Bytes of accepted uploads per second, by kind.',
        unit: 'Bps',
        queries: [
          { expr: `sum by (kind) (${rate('media_upload_bytes_total{outcome="accepted"}')})`, legend: '{{kind}}' },
        ],
      },
    ],
  },
  {
    title: 'Jobs',
    panels: [
      {
        title: 'Jobs finished',
        description: 'Jobs reaching a final state per second, by kind and status (summed over API instances).',
        unit: 'ops',
        queries: [
          { expr: `sum by (kind, status) (${rate('media_jobs_finished_total')})`, legend: '{{kind}} {{status}}' },
        ],
      },
      {
        title: 'Jobs waiting and running',
        description: 'Jobs queued or processing now, from the database (every API instance reports the same: max).',
        unit: 'short',
        queries: [
          { expr: 'max by (kind, status) (media_jobs{status=~"queued|processing"})', legend: '{{kind}} {{status}}' },
        ],
      },
      {
        title: 'Upload to completed',
        description: 'Time from the upload accepted to the job completed: median and 95th percentile, by kind.',
        unit: 's',
        queries: [
          { expr: quantile(0.5, 'media_job_duration_seconds', 'kind', '{status="completed"}'), legend: '{{kind}} p50' },
          {
            expr: quantile(0.95, 'media_job_duration_seconds', 'kind', '{status="completed"}'),
            legend: '{{kind}} p95',
          },
        ],
      },
      {
        title: 'Time in the queue',
        description:
          'Time from the job queued to the first word from a processor, 95th percentile, by kind and class: interactive work should stay short whatever the bulk backlog.',
        unit: 's',
        queries: [
          { expr: quantile(0.95, 'media_job_queued_seconds', 'kind, class'), legend: '{{kind}} {{class}} p95' },
        ],
      },
      {
        title: 'Stages',
        description: 'Time completed jobs spent downloading, processing and uploading, 95th percentile.',
        unit: 's',
        queries: [{ expr: quantile(0.95, 'media_job_stage_seconds', 'kind, stage'), legend: '{{kind}} {{stage}} p95' }],
      },
    ],
  },
  {
    title: 'Processors',
    panels: [
      {
        title: 'Slots',
        description:
          'Job slots of all processors, busy and free, by kind. All busy and a queue growing: add processors.',
        unit: 'short',
        queries: [{ expr: 'sum by (kind, state) (media_processor_slots)', legend: '{{kind}} {{state}}' }],
      },
      {
        title: 'Started by class',
        description:
          'Attempts started per second, interactive and bulk. Bulk work never takes the last free slot of a processor.',
        unit: 'ops',
        queries: [
          {
            expr: `sum by (kind, class) (${rate('media_processor_jobs_started_total')})`,
            legend: '{{kind}} {{class}}',
          },
        ],
      },
      {
        title: 'Waiting for a slot',
        description: 'Deliveries a processor holds until a slot frees (interactive ones start first), by class.',
        unit: 'short',
        queries: [{ expr: 'sum by (kind, class) (media_processor_waiting)', legend: '{{kind}} {{class}}' }],
      },
      {
        title: 'Attempts by outcome',
        description:
          'Attempts ended per second: completed, failed, cancelled, retried (a fault), interrupted, refused, handed back, lost.',
        unit: 'ops',
        queries: [
          { expr: `sum by (kind, outcome) (${rate('media_processor_jobs_total')})`, legend: '{{kind}} {{outcome}}' },
        ],
      },
      {
        title: 'Output size',
        description: 'Size of the outputs stored, 95th percentile, by format.',
        unit: 'bytes',
        queries: [{ expr: quantile(0.95, 'media_output_bytes', 'format'), legend: '{{format}} p95' }],
      },
    ],
  },
  {
    title: 'Queues',
    panels: [
      {
        title: 'Messages ready',
        description:
          'Messages waiting in each queue, from the broker: request (interactive work) and bulk are the two classes.',
        unit: 'short',
        queries: [{ expr: 'max by (kind, queue) (media_queue_messages)', legend: '{{kind}} {{queue}}' }],
      },
      {
        title: 'Processors consuming',
        description: 'Consumers of each request queue (interactive and bulk): one per processor with a free slot.',
        unit: 'short',
        queries: [
          {
            expr: 'max by (kind, queue) (media_queue_consumers{queue=~"request|bulk"})',
            legend: '{{kind}} {{queue}}',
          },
        ],
      },
      {
        title: 'Dead letters',
        description: 'Dead letters kept for an operator (GET /v1/admin/dead-letters).',
        unit: 'short',
        stat: true,
        queries: [{ expr: 'max(media_dead_letters)', legend: 'dead letters' }],
      },
    ],
  },
  {
    title: 'Outbox and stalls',
    panels: [
      {
        title: 'Outbox',
        description:
          'Requests accepted but not yet confirmed by the broker, and the age of the oldest. Minutes old: the broker refuses.',
        unit: 'short',
        queries: [
          { expr: 'max(media_outbox_backlog)', legend: 'backlog' },
          { expr: 'max(media_outbox_oldest_age_seconds)', legend: 'oldest (s)' },
        ],
      },
      {
        title: 'Stalled jobs',
        description: 'Jobs processing with no word past STALL_SECONDS, and what the sweep did to them.',
        unit: 'short',
        queries: [
          { expr: 'max(media_jobs_stalled)', legend: 'stalled now' },
          { expr: 'sum by (action) (increase(media_stall_actions_total[$__rate_interval]))', legend: '{{action}}' },
        ],
      },
    ],
  },
  {
    title: 'Errors and HTTP',
    panels: [
      {
        title: 'S3 errors',
        description: 'Failed S3 requests per second, by service and operation.',
        unit: 'ops',
        queries: [
          {
            expr: `sum by (service, operation) (${rate('media_s3_errors_total')})`,
            legend: '{{service}} {{operation}}',
          },
        ],
      },
      {
        title: 'Broker errors',
        description: 'RabbitMQ failures per second, by service and operation.',
        unit: 'ops',
        queries: [
          {
            expr: `sum by (service, operation) (${rate('media_broker_errors_total')})`,
            legend: '{{service}} {{operation}}',
          },
        ],
      },
      {
        title: 'Webhook attempts',
        description:
          'Webhook delivery attempts per second: delivered, to be retried, or given up (see GET /v1/webhooks/:id/deliveries).',
        unit: 'ops',
        queries: [{ expr: `sum by (outcome) (${rate('media_webhook_attempts_total')})`, legend: '{{outcome}}' }],
      },
      {
        title: 'HTTP latency',
        description: 'Time to answer (to the headers), 95th percentile, by route.',
        unit: 's',
        queries: [{ expr: quantile(0.95, 'media_http_request_duration_seconds', 'route'), legend: '{{route}} p95' }],
      },
      {
        title: 'HTTP 5xx',
        description: 'Answers with a 5xx status per second, by route.',
        unit: 'reqps',
        queries: [
          {
            expr: `sum by (route, status) (${rate('media_http_requests_total{status=~"5.."}')})`,
            legend: '{{route}} {{status}}',
          },
        ],
      },
    ],
  },
  {
    title: 'Runtime',
    panels: [
      {
        title: 'Ready',
        description: 'Whether each service is ready (1), as /readyz answers.',
        unit: 'short',
        queries: [
          { expr: 'min by (service, instance) (media_ready{service=~"$service"})', legend: '{{service}} {{instance}}' },
        ],
      },
      {
        title: 'Memory (RSS)',
        description: 'Resident memory of each process.',
        unit: 'bytes',
        queries: [{ expr: 'process_resident_memory_bytes{service=~"$service"}', legend: '{{service}} {{instance}}' }],
      },
      {
        title: 'Event-loop lag p99',
        description: 'How late timers run: a busy or blocked event loop (not measured on Deno).',
        unit: 's',
        queries: [
          { expr: 'nodejs_eventloop_lag_p99_seconds{service=~"$service"}', legend: '{{service}} {{instance}}' },
        ],
      },
      {
        title: 'CPU',
        description: 'CPU seconds per second of each process.',
        unit: 'percentunit',
        queries: [{ expr: rate('process_cpu_seconds_total{service=~"$service"}'), legend: '{{service}} {{instance}}' }],
      },
    ],
  },
]

const DATASOURCE = { type: 'prometheus', uid: '${datasource}' }

/** Grafana's dashboard JSON (schema 39): a row per group, panels two or three to a line. */
export function dashboard(rows: Row[] = ROWS) {
  const panels: unknown[] = []
  let id = 1
  let y = 0
  for (const row of rows) {
    panels.push({
      id: id++,
      type: 'row',
      title: row.title,
      collapsed: false,
      gridPos: { h: 1, w: 24, x: 0, y },
      panels: [],
    })
    y += 1
    const width = row.panels.length % 3 === 0 ? 8 : 12
    row.panels.forEach((panel, i) => {
      const x = (i * width) % 24
      if (i > 0 && x === 0) y += 8
      panels.push({
        id: id++,
        type: panel.stat ? 'stat' : 'timeseries',
        title: panel.title,
        description: panel.description,
        datasource: DATASOURCE,
        gridPos: { h: 8, w: width, x, y },
        fieldConfig: { defaults: { unit: panel.unit }, overrides: [] },
        options: panel.stat
          ? { reduceOptions: { calcs: ['lastNotNull'] } }
          : { legend: { displayMode: 'list', placement: 'bottom' } },
        targets: panel.queries.map((q, n) => ({
          datasource: DATASOURCE,
          expr: q.expr,
          legendFormat: q.legend,
          refId: String.fromCharCode(65 + n),
        })),
      })
    })
    y += 8
  }
  return {
    title: 'Media pipeline',
    uid: 'media-pipeline',
    description:
      'Uploads, jobs, processors, queues, the outbox and errors of the media pipeline (see docs/operating.md).',
    tags: ['media'],
    schemaVersion: 39,
    version: 1,
    editable: true,
    time: { from: 'now-6h', to: 'now' },
    refresh: '30s',
    templating: {
      list: [
        { name: 'datasource', label: 'Prometheus', type: 'datasource', query: 'prometheus', current: {} },
        {
          name: 'service',
          label: 'Service',
          type: 'query',
          datasource: DATASOURCE,
          query: { query: 'label_values(media_ready, service)', refId: 'service' },
          definition: 'label_values(media_ready, service)',
          includeAll: true,
          multi: true,
          current: { text: 'All', value: '$__all' },
          refresh: 2,
        },
      ],
    },
    annotations: { list: [] },
    panels,
  }
}

if (import.meta.main) {
  const file = join(import.meta.dir, 'media-pipeline.json')
  writeFileSync(file, `${JSON.stringify(dashboard(), null, 2)}\n`)
  console.log(`wrote ${file}`)
}

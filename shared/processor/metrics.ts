/**
 * A processor's metrics: what its jobs end as, how long each attempt and stage takes, what its outputs weigh and how
 * long they take to store, and how many of its slots are busy. Fed by the runtime's events and its stage clock.
 */
import { JOB_CLASSES, MEDIA_KINDS, type JobClass, type MediaType } from '../names.ts'
import type { OutputFormat } from '../outputs.ts'
import { DURATION_BUCKETS, SIZE_BUCKETS, commonMetrics, metricsOn, type Registry } from '../ops/metrics.ts'
import type { ProcessorEvents } from './events.ts'
import type { Stage } from './updates.ts'

/** The stages a job's media code reports, as the `stage` label. */
const STAGE_LABELS: Partial<Record<Stage, string>> = {
  downloading: 'download',
  processing: 'process',
  uploading: 'upload',
}

export function processorMetrics(
  registry: Registry,
  type: MediaType,
  slots: () => { busy: number; free: number; waiting: Record<JobClass, number> },
  ready: () => Promise<boolean>
) {
  const kind = MEDIA_KINDS[type]
  const common = commonMetrics(registry, ready)
  const { counter, gauge, histogram } = metricsOn(registry)
  const jobs = counter(
    'media_processor_jobs_total',
    'Job attempts that ended here, by outcome (completed, failed, cancelled, retried, interrupted, refused, handed_back, lost)',
    ['kind', 'outcome']
  )
  gauge(
    'media_processor_slots',
    'Job slots of this processor (its concurrency), busy or free',
    ['kind', 'state'],
    function () {
      const now = slots()
      this.set({ kind, state: 'busy' }, now.busy)
      this.set({ kind, state: 'free' }, now.free)
    }
  )
  gauge(
    'media_processor_waiting',
    'Deliveries held here until a slot frees (interactive ones start first), by class',
    ['kind', 'class'],
    function () {
      const { waiting } = slots()
      for (const cls of JOB_CLASSES) this.set({ kind, class: cls }, waiting[cls])
    }
  )
  const started = counter('media_processor_jobs_started_total', 'Job attempts started here, by class', [
    'kind',
    'class',
  ])
  const stages = histogram(
    'media_job_stage_seconds',
    'Time a completed job spent in each stage of its last attempt (download, process, upload)',
    ['kind', 'stage'],
    DURATION_BUCKETS
  )
  const attempts = histogram(
    'media_job_attempt_seconds',
    'Duration of one attempt of a job here, by how it ended',
    ['kind', 'outcome'],
    DURATION_BUCKETS
  )
  const outputBytes = histogram(
    'media_output_bytes',
    'Size of each output stored, by format',
    ['kind', 'format'],
    SIZE_BUCKETS
  )
  const outputSeconds = histogram(
    'media_output_upload_seconds',
    'Time to store each output in S3, by format',
    ['kind', 'format'],
    DURATION_BUCKETS
  )

  return {
    ...common,
    /** Counts every outcome the runtime reports, and times attempts from `received` to how they end. */
    watch(events: ProcessorEvents): void {
      const begun = new Map<string, number>()
      const end = (jobId: string, outcome: string) => {
        jobs.inc({ kind, outcome })
        const at = begun.get(jobId)
        if (at === undefined) return
        begun.delete(jobId)
        attempts.observe({ kind, outcome }, (performance.now() - at) / 1000)
      }
      events.on('received', ({ jobId, cls }) => {
        begun.set(jobId, performance.now())
        started.inc({ kind, class: cls })
      })
      events.on('completed', ({ jobId }) => end(jobId, 'completed'))
      events.on('failed', ({ jobId }) => end(jobId, 'failed'))
      events.on('cancelled', ({ jobId }) => end(jobId, 'cancelled'))
      events.on('retrying', ({ jobId }) => end(jobId, 'retried'))
      events.on('interrupted', ({ jobId }) => end(jobId, 'interrupted'))
      events.on('handed-back', ({ jobId }) => end(jobId, 'handed_back'))
      events.on('lost', ({ jobId }) => end(jobId, 'lost'))
      events.on('refused', () => jobs.inc({ kind, outcome: 'refused' }))
    },
    /** A clock for one attempt's stages; `done` records them (only for completed jobs, so failures do not skew them). */
    stageClock() {
      const spent = new Map<string, number>()
      let current: string | undefined
      let since = performance.now()
      const lap = () => {
        const now = performance.now()
        if (current) spent.set(current, (spent.get(current) ?? 0) + (now - since) / 1000)
        since = now
      }
      return {
        enter(stage: Stage) {
          const label = STAGE_LABELS[stage]
          if (label === current) return
          lap()
          current = label
        },
        done() {
          lap()
          current = undefined
          for (const [stage, seconds] of spent) stages.observe({ kind, stage }, seconds)
        },
      }
    },
    output(format: OutputFormat, bytes: number, seconds: number): void {
      outputBytes.observe({ kind, format }, bytes)
      outputSeconds.observe({ kind, format }, seconds)
    },
  }
}
export type ProcessorMetrics = ReturnType<typeof processorMetrics>

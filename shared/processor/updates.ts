/**
 * A running job's updates, sent as the protocol's rate rule says: at most one every UPDATE_INTERVAL_MS (a newer
 * one replaces one still waiting its turn), the latest again every heartbeat, and the final one at once.
 * Progress never goes back. Updates are advisory: a lost one is replaced by the next, and the result decides the
 * final state, so a failed send is only reported, never retried.
 */
import { UPDATE_INTERVAL_MS } from '../topology.ts'
import type { JobUpdate } from '../messages.ts'

export type UpdateFields = Omit<JobUpdate, 'version' | 'jobId' | 'at'>
export type Stage = JobUpdate['stage']

export interface Updates {
  /** Reports progress (0-100, kept below 100 until the end) in a stage, with an ETA where one is known. */
  progress(stage: Stage, value: number, etaSeconds?: number | null): void
  /** Sends the final update at once; nothing is sent after it. */
  final(update: UpdateFields): void
  /** Stops sending (the job lost its delivery). */
  close(): void
  /** Resolves once every update sent so far was confirmed or failed. */
  settled(): Promise<void>
}

export function createUpdates(options: {
  send: (update: UpdateFields) => Promise<void>
  heartbeatMs: number
  onError: (error: unknown) => void
  intervalMs?: number
}): Updates {
  const intervalMs = options.intervalMs ?? UPDATE_INTERVAL_MS
  let latest: UpdateFields = { status: 'processing', stage: 'queued', progress: 0 }
  let waiting: UpdateFields | undefined
  let lastSentAt = 0
  let timer: ReturnType<typeof setTimeout> | undefined
  let closed = false
  // One chain rather than a list: a long transcode sends thousands of updates.
  let pending = Promise.resolve()
  const send = (update: UpdateFields) => {
    latest = update
    lastSentAt = Date.now()
    const sent = options.send(update).catch(options.onError)
    pending = Promise.all([pending, sent]).then(() => {})
  }
  const sendWaiting = () => {
    timer = undefined
    if (waiting && !closed) send(waiting)
    waiting = undefined
  }
  // The heartbeat: the latest update again, so the backend can tell a slow job from a dead processor.
  const heartbeat = setInterval(() => closed || send(latest), options.heartbeatMs)
  const stop = () => {
    closed = true
    clearInterval(heartbeat)
    clearTimeout(timer)
    waiting = undefined
  }
  return {
    progress(stage, value, etaSeconds) {
      if (closed) return
      const before = waiting ?? latest
      const progress = Math.max(before.progress, Math.min(99, Math.floor(value)))
      if (stage === before.stage && progress === before.progress && etaSeconds === undefined) return
      const next: UpdateFields = {
        status: 'processing',
        stage,
        progress,
        ...(etaSeconds !== undefined ? { etaSeconds } : {}),
      }
      const wait = lastSentAt + intervalMs - Date.now()
      if (wait <= 0 && !timer) return send(next)
      waiting = next
      timer ??= setTimeout(sendWaiting, Math.max(0, wait))
    },
    final(update) {
      if (closed) return
      stop()
      send(update)
    },
    close: stop,
    settled: () => pending,
  }
}

/**
 * Seconds left when `fraction` of a job's work is done after `elapsedSeconds`, at the rate so far; null until the
 * rate is worth telling (2% done, half a second in).
 */
export function etaSeconds(fraction: number, elapsedSeconds: number): number | null {
  return fraction >= 0.02 && elapsedSeconds >= 0.5 ? Math.round((elapsedSeconds * (1 - fraction)) / fraction) : null
}

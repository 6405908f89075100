/**
 * The API's timer work, each round done by one instance of all of them (store coordination `claimRound`) where two
 * would do it twice: the outbox relay (every instance: rows are claimed one by one); the stall sweep; the upload,
 * tus and Idempotency-Key sweeps, hourly; and webhook delivery rounds (every instance: deliveries are claimed).
 */
import { MEDIA_TYPES, type MediaType } from '@app/shared'
import type { Logger } from '@app/shared/ops'
import type { ApiMetrics } from '../metrics.ts'
import type { Store } from '../store/open.ts'
import { IDEMPOTENCY_KEEP_MS } from '../uploads/idempotency.ts'
import type { Tus } from '../uploads/tus.ts'
import type { Deliverer } from '../webhooks/deliver.ts'
import type { Broker } from './broker.ts'
import type { Outbox } from './outbox.ts'

const OUTBOX_INTERVAL_MS = 5_000
/** How often the abandoned-upload sweep runs, by one instance of all of them. */
const UPLOAD_SWEEP_EVERY_MS = 3_600_000
/** How often each instance asks whether a sweep is due (the sweep itself runs at its own pace, once across instances). */
const UPLOAD_SWEEP_CHECK_MS = 300_000
/** How often each instance looks for webhook deliveries due (each is claimed by one instance). */
const WEBHOOK_ROUND_MS = 1_000

export interface TimerDeps {
  store: Pick<Store, 'coordination' | 'media' | 'idempotency' | 'limits' | 'events'>
  broker: Pick<Broker, 'isConnected' | 'consumers'>
  outbox: Pick<Outbox, 'relay'>
  tus: Pick<Tus, 'cleanUp'>
  deliverer: Pick<Deliverer, 'round'>
  /** Sweeps uploads older than the given age (uploads/sweep.ts). */
  sweepUploads(olderThanMs: number): Promise<unknown>
  metrics: Pick<ApiMetrics, 'stallAction'>
  log: Logger
  settings: { stallMs: number; maxRedrives: number; multipartMaxAgeMs: number; eventsKeepMs: number }
}

/** Starts every timer; `stop` clears them (a round under way finishes on its own). */
export function startTimers(deps: TimerDeps): { stop(): void } {
  const { store, broker, outbox, log, settings } = deps

  // The outbox relay: what an upload could not send (or a re-drive wrote) goes out on the next round.
  const relay = setInterval(() => void outbox.relay(), OUTBOX_INTERVAL_MS)
  void outbox.relay()

  // Stalled jobs: processing, yet no word (not even a heartbeat) for STALL_SECONDS. Only types with a live processor
  // count: with none running, jobs wait in their queue, as they may (processors need not be up). One instance sweeps
  // each round; the store's row locks would keep a second from re-driving a job twice anyway.
  const stallEveryMs = Math.min(30_000, Math.max(1_000, settings.stallMs / 4))
  let sweeping = false
  const stallSweep = async () => {
    if (sweeping || !broker.isConnected()) return
    sweeping = true
    try {
      if (!(await store.coordination.claimRound('stall-sweep', stallEveryMs - 100))) return
      const live: MediaType[] = []
      for (const type of MEDIA_TYPES) if ((await broker.consumers(type)) > 0) live.push(type)
      for (const action of await store.media.sweepStalled(settings.stallMs, settings.maxRedrives, live)) {
        deps.metrics.stallAction(action.action)
        log.warn(
          { jobId: action.jobId, mediaId: action.mediaId, action: action.action },
          `job stalled (silent for ${settings.stallMs / 1000} s): ${action.action}`
        )
      }
      void outbox.relay()
    } catch (error) {
      log.warn({ err: error }, `stall sweep: ${(error as Error).message}; will retry`)
    } finally {
      sweeping = false
    }
  }
  const stall = setInterval(stallSweep, stallEveryMs)

  const hourly = setInterval(async () => {
    try {
      if (await store.coordination.claimRound('multipart-sweep', UPLOAD_SWEEP_EVERY_MS))
        await deps.sweepUploads(settings.multipartMaxAgeMs)
    } catch (error) {
      log.warn(
        { err: error },
        `multipart sweep: ${(error as Error).message}; an S3 lifecycle rule (AbortIncompleteMultipartUpload) does the same`
      )
    }
    // Resumable uploads left unfinished past their day: their S3 multipart uploads are aborted.
    if (await store.coordination.claimRound('tus-sweep', UPLOAD_SWEEP_EVERY_MS).catch(() => false)) {
      await deps.tus.cleanUp().catch((error: Error) => log.warn({ err: error }, `tus sweep: ${error.message}`))
    }
    // The request windows and upload slots counted in the database (PostgreSQL) once they have ended.
    if (
      store.limits &&
      (await store.coordination.claimRound('limits-sweep', UPLOAD_SWEEP_EVERY_MS).catch(() => false))
    ) {
      await store.limits
        .sweep(Date.now() - 5 * 60_000)
        .catch((error: Error) => log.warn({ err: error }, `limits sweep: ${error.message}`))
    }
    // The event log past its window (a client asking to resume from there is told to read the media again).
    if (await store.coordination.claimRound('events-sweep', UPLOAD_SWEEP_EVERY_MS).catch(() => false)) {
      await store.events
        .prune(settings.eventsKeepMs)
        .catch((error: Error) => log.warn({ err: error }, `event log sweep: ${error.message}`))
    }
    // Answers kept for Idempotency-Keys past their day (lookups ignore them already; this only frees the rows).
    if (await store.coordination.claimRound('idempotency-sweep', UPLOAD_SWEEP_EVERY_MS).catch(() => false)) {
      await store.idempotency
        .sweep(IDEMPOTENCY_KEEP_MS)
        .catch((error: Error) => log.warn({ err: error }, `idempotency sweep: ${error.message}`))
    }
  }, UPLOAD_SWEEP_CHECK_MS)

  // Webhooks: the store writes each event with the change it announces; this sends what is due, here or elsewhere.
  const webhooks = setInterval(() => void deps.deliverer.round(), WEBHOOK_ROUND_MS)

  return {
    stop() {
      for (const timer of [relay, stall, hourly, webhooks]) clearInterval(timer)
    },
  }
}

/** Wires the API's parts together: store, storage, broker consumers, the outbox relay and the HTTP app. */
import { MEDIA_TYPES, type MediaType } from '@app/shared'
import { createApp } from './app.ts'
import { connectBroker, type Broker } from './broker.ts'
import type { Config } from './config.ts'
import { readDeadLetter } from './dead-letters.ts'
import { outputPrefix } from './recipes.ts'
import { openSqliteStore } from './sqlite-store.ts'
import { createStorage } from './storage.ts'

/** A request not confirmed within this long after it was written is re-sent by the relay. */
const OUTBOX_GRACE_MS = 15_000
const OUTBOX_INTERVAL_MS = 5_000
/** The longest an upload waits for the broker's confirm before answering 503. */
const PUBLISH_TIMEOUT_MS = 5_000
const UPLOAD_SWEEP_INTERVAL_MS = 3_600_000

export async function startApi(config: Config) {
  const store = openSqliteStore(config.databasePath)
  const storage = createStorage(config.s3)
  /** Fires an event named by the media id whenever that media changed (here or on another instance). */
  const changes = new EventTarget()
  // Consumers start inside connectBroker, before it returns: until then there is no one to announce to anyway.
  let connected: Broker | undefined
  const announce = (mediaId: string) => connected?.announce(mediaId)
  const broker: Broker = await connectBroker(
    { url: config.rabbitmqUrl, system: config.system, publishTimeoutMs: PUBLISH_TIMEOUT_MS },
    {
      async onUpdate(_type, update) {
        const applied = await store.applyUpdate(update)
        if (applied?.changed) announce(applied.mediaId)
      },
      async onResult(_type, result) {
        const applied = await store.applyResult(result)
        if (applied?.changed) announce(applied.mediaId)
        // Outputs of a job that was cancelled (or whose media was deleted) before its result came: remove them,
        // so nothing of a cancelled job remains whichever way the race went. Only keys under the job's own prefix:
        // a message never gets to name what else is deleted.
        if (result.status === 'completed' && (!applied || applied.status === 'cancelled')) {
          const prefix = `${outputPrefix(config.system, result.jobId)}/`
          await Promise.all(result.outputs.filter((o) => o.key.startsWith(prefix)).map((o) => storage.delete(o.key)))
        }
      },
      async onDeadLetter(type, raw) {
        const { letter, failure } = readDeadLetter(type, raw)
        console.error(
          `api: dead letter from ${letter.queue} (${letter.reason}${letter.jobId ? `, job ${letter.jobId}` : ''})` +
            (letter.problem ? `: ${letter.problem}` : '')
        )
        const applied = await store.recordDeadLetter(letter, failure)
        if (applied?.changed) announce(applied.mediaId)
      },
      onMediaChanged: (mediaId) => void changes.dispatchEvent(new Event(mediaId)),
    }
  ).catch(async (error) => {
    await store.close()
    storage.close()
    throw error
  })
  connected = broker

  // The outbox relay: a request written but never confirmed (the API died between the two, or the broker was away)
  // is published again. Processors and the store are idempotent, so a duplicate is harmless.
  let relaying = false
  const relay = async () => {
    if (relaying || !broker.isConnected()) return
    relaying = true
    try {
      for (const message of await store.unpublished(OUTBOX_GRACE_MS)) {
        await broker.publish(message.queue, message.body, { correlationId: message.jobId, type: message.type, messageId: message.messageId })
        await store.markPublished(message.messageId)
      }
    } catch (error) {
      console.warn(`api: outbox relay: ${(error as Error).message}; will retry`)
    } finally {
      relaying = false
    }
  }
  const relayTimer = setInterval(relay, OUTBOX_INTERVAL_MS)
  void relay()

  // Stalled jobs: processing, yet no word (not even a heartbeat) for STALL_SECONDS. Only types with a live processor
  // count: with none running, jobs wait in their queue, as they may (processors need not be up).
  let sweeping = false
  const sweep = async () => {
    if (sweeping || !broker.isConnected()) return
    sweeping = true
    try {
      const live: MediaType[] = []
      for (const type of MEDIA_TYPES) if ((await broker.consumers(type)) > 0) live.push(type)
      for (const action of await store.sweepStalled(config.stallMs, config.maxRedrives, live)) {
        console.warn(`api: job ${action.jobId} stalled (silent for ${config.stallMs / 1000} s): ${action.action}`)
        announce(action.mediaId)
      }
      void relay()
    } catch (error) {
      console.warn(`api: stall sweep: ${(error as Error).message}; will retry`)
    } finally {
      sweeping = false
    }
  }
  const sweepTimer = setInterval(sweep, Math.min(30_000, Math.max(1_000, config.stallMs / 4)))

  // Abandoned multipart uploads (a process killed mid-upload) under this system's keys, hourly. Stores without
  // ListMultipartUploads (some S3 clones) need a lifecycle rule (AbortIncompleteMultipartUpload) instead.
  const sweepUploads = async (olderThanMs: number) => {
    const aborted = await storage.abortStaleUploads(`${config.system}/`, olderThanMs)
    if (aborted.length) console.warn(`api: aborted ${aborted.length} abandoned multipart upload(s): ${aborted.join(', ')}`)
    return aborted
  }
  const uploadsTimer = setInterval(
    () =>
      void sweepUploads(config.multipartMaxAgeMs).catch((error) =>
        console.warn(`api: multipart sweep: ${(error as Error).message}; an S3 lifecycle rule (AbortIncompleteMultipartUpload) does the same`)
      ),
    UPLOAD_SWEEP_INTERVAL_MS
  )

  const app = createApp({
    system: config.system,
    store,
    storage,
    broker,
    changes,
    maxUploadBytes: config.maxUploadBytes,
    stallMs: config.stallMs,
    adminToken: config.adminToken,
    relay,
    sweepUploads,
  })
  return {
    app,
    store,
    async stop() {
      clearInterval(relayTimer)
      clearInterval(sweepTimer)
      clearInterval(uploadsTimer)
      await broker.close()
      storage.close()
      await store.close()
    },
  }
}

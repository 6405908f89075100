/**
 * The one way a request reaches the broker. A request is first written to the store's outbox, in the transaction
 * that creates (or re-drives) its job; `send` then publishes it and records the broker's confirm. A row left
 * unconfirmed (the API died in between, or the broker was away) is sent again by `relay`. Processors and the store
 * are idempotent, so a request sent twice is harmless; one never sent would leave its job queued forever.
 */
import { TRACEPARENT } from '@app/shared'
import type { Logger } from '@app/shared/ops'
import type { Broker } from './broker.ts'
import type { OutboxMessage, Store } from './store.ts'

export interface Outbox {
  /** Publishes a row now and records the confirm; rejects when the broker did not take it. */
  send(message: OutboxMessage): Promise<void>
  /**
   * Sends again, through `send`, the rows unconfirmed for `graceMs` (a re-driven row counts as old at once). Never
   * rejects: what fails waits for the next round. A call during a round makes another round follow it.
   */
  relay(): Promise<void>
}

/** How long a relay round holds the rows it claimed: other instances send them if it has not after this long. */
const CLAIM_MS = 60_000

export function createOutbox(deps: { store: Store; broker: Broker; graceMs: number; log: Logger }): Outbox {
  const { store, broker, graceMs, log } = deps

  async function send(message: OutboxMessage): Promise<void> {
    // The upload's trace goes with the request, so the processor's log lines carry it too.
    const headers = message.traceparent ? { [TRACEPARENT]: message.traceparent } : undefined
    await broker.publish(message.queue, message.body, { correlationId: message.jobId, type: message.type, messageId: message.messageId, headers })
    // The broker has the request, so the job is queued whatever happens next: a confirm that is not recorded only
    // means the relay sends it once more (harmless), whereas failing here would make an upload undo a queued job.
    await store.markPublished(message.messageId).catch((error: Error) => {
      log.warn({ jobId: message.jobId, messageId: message.messageId, err: error }, `outbox: request sent but not marked sent (${error.message}); the relay will send it again`)
    })
  }

  async function round(): Promise<void> {
    if (!broker.isConnected()) return
    let claimed: OutboxMessage[] = []
    try {
      claimed = await store.claimUnpublished(graceMs, CLAIM_MS)
      while (claimed.length) {
        await send(claimed[0]!)
        claimed.shift()
      }
    } catch (error) {
      log.warn({ err: error }, `outbox relay: ${(error as Error).message}; will retry`)
      // What this round could not send is free for the next round of any instance, not held for the whole claim.
      await store.unclaim(claimed.map((m) => m.messageId)).catch(() => {})
    }
  }

  let running: Promise<void> | null = null
  let again = false
  return {
    send,
    relay() {
      if (running) {
        again = true
        return running
      }
      running = (async () => {
        do {
          again = false
          await round()
        } while (again)
      })().finally(() => {
        running = null
      })
      return running
    },
  }
}

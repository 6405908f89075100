/**
 * The one way a request reaches the broker. A request is first written to the store's outbox, in the transaction
 * that creates (or re-drives) its job; `send` then publishes it and records the broker's confirm. A row left
 * unconfirmed (the API died in between, or the broker was away) is sent again by `relay`. Processors and the store
 * are idempotent, so a request sent twice is harmless; one never sent would leave its job queued forever.
 */
import { CLASS_PRIORITY, TRACEPARENT, classOfQueue } from '@app/shared'
import type { Logger } from '@app/shared/ops'
import type { Broker } from './broker.ts'
import type { OutboxMessage } from '../store/outbox.ts'
import type { Store } from '../store/open.ts'

export interface Outbox {
  /** Publishes a row now and records the confirm; rejects when the broker did not take it. */
  send(message: OutboxMessage): Promise<void>
  /**
   * Sends again the rows unconfirmed for `graceMs` (a re-driven row counts as old at once), until none is left. Never
   * rejects: what fails waits for the next call. A call during a round makes another round follow it.
   */
  relay(): Promise<void>
}

/** How long a relay round holds the rows it claimed: other instances send them if it has not after this long. */
const CLAIM_MS = 60_000

export function createOutbox(deps: { store: Store; broker: Broker; graceMs: number; log: Logger }): Outbox {
  const { store, broker, graceMs, log } = deps

  function publish(message: OutboxMessage): Promise<void> {
    // The upload's trace goes with the request, so the processor's log lines carry it too.
    const headers = message.traceparent ? { [TRACEPARENT]: message.traceparent } : undefined
    return broker.publish(message.queue, message.body, {
      correlationId: message.jobId,
      type: message.type,
      messageId: message.messageId,
      // For a broker that orders by priority (RabbitMQ 4 quorum queues); 3.x has the two queues do it.
      priority: CLASS_PRIORITY[classOfQueue(message.queue)],
      headers,
    })
  }

  // The broker has the requests, so their jobs are queued whatever happens next: a confirm that is not recorded only
  // means the relay sends them once more (harmless), whereas failing here would make an upload undo a queued job.
  async function recordSent(messages: readonly OutboxMessage[]): Promise<void> {
    await store.outbox.markPublished(messages.map((m) => m.messageId)).catch((error: Error) => {
      log.warn(
        { messageIds: messages.map((m) => m.messageId), err: error },
        `outbox: ${messages.length} request(s) sent but not marked sent (${error.message}); the relay will send them again`
      )
    })
  }

  async function send(message: OutboxMessage): Promise<void> {
    await publish(message)
    await recordSent([message])
  }

  /** Rows to send, claimed; null when the store failed (the next call tries again). */
  async function claim(): Promise<OutboxMessage[] | null> {
    if (!broker.isConnected()) return null
    return store.outbox.claimUnpublished(graceMs, CLAIM_MS).catch((error: Error) => {
      log.warn({ err: error }, `outbox relay: ${error.message}; will retry`)
      return null
    })
  }

  /**
   * Publishes a claim at once and marks it sent in one statement: true when all of it went out. The broker confirms
   * (and a quorum queue syncs to disk) in batches, so awaiting each confirm before the next publish made a backlog
   * drain at one round trip and one write a message (issue 13's figure 8: 1,100/s against 14,000/s for raw amqplib).
   */
  async function sendClaimed(claimed: OutboxMessage[]): Promise<boolean> {
    const outcomes = await Promise.allSettled(claimed.map(publish))
    const sent = claimed.filter((_, i) => outcomes[i]!.status === 'fulfilled')
    const unsent = claimed.filter((_, i) => outcomes[i]!.status === 'rejected')
    await recordSent(sent)
    if (!unsent.length) return true
    const reason = (outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult).reason as Error
    log.warn(
      { err: reason },
      `outbox relay: ${unsent.length} of ${claimed.length} request(s) not sent (${reason.message}); will retry`
    )
    // What could not be sent is free for the next round of any instance, not held for the whole claim.
    await store.outbox.unclaim(unsent.map((m) => m.messageId)).catch(() => {})
    return false
  }

  /** Sends claims until none is left; the next claim is read while the broker confirms the one before it. */
  async function drain(): Promise<void> {
    let previous: Promise<boolean> = Promise.resolve(true)
    for (;;) {
      const claimed = await claim()
      if (!claimed?.length) break
      const current = sendClaimed(claimed)
      if (!(await previous)) {
        previous = current
        break
      }
      previous = current
    }
    await previous
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
          await drain()
        } while (again)
      })().finally(() => {
        running = null
      })
      return running
    },
  }
}

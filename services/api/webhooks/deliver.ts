/**
 * Sends webhook deliveries: at least once, surviving restarts, each by one API instance at a time. Events are
 * written by the store in the transaction of the change they announce (the outbox); every round here claims the
 * deliveries that are due, sends each with a timeout, and records the attempt: delivered on a 2xx; given up, and
 * the endpoint disabled, on 410 Gone; otherwise tried again after a backoff (Standard Webhooks' schedule, with
 * jitter, never sooner than a `Retry-After`) until WEBHOOK_RETRY_HOURS after the event. Redirects are not followed.
 */
import type { Logger } from '@app/shared/ops'
import { present } from '../http/present.ts'
import type { DeliveryOutcome, DueDelivery } from '../store/webhooks.ts'
import type { Store } from '../store/open.ts'
import { lookup } from 'node:dns/promises'
import { urlProblem, type DestinationRules, type Resolver } from './destination.ts'
import { postPinned } from './post.ts'
import { signedHeaders } from './sign.ts'

export interface DeliverySettings extends DestinationRules {
  timeoutMs: number
  /** Waits after the 1st, 2nd, … failed attempt; the last repeats (WEBHOOK_RETRY_SCHEDULE). */
  scheduleMs: number[]
  /** No attempt is made later than this after the event. */
  giveUpAfterMs: number
  /** The API's public base URL: the outputs' `url` in each body. */
  publicUrl: string
}

/**
 * How long a claimed delivery is this instance's: past it (the instance died mid-send) another sends it. Well past
 * an attempt's own timeout, so a slow endpoint is never sent to twice at once.
 */
const claimMs = (timeoutMs: number) => Math.max(120_000, timeoutMs * 2 + 30_000)
const BATCH = 20
/** An error body is quoted this far in the delivery's record. */
const QUOTED = 200

export interface Deliverer {
  /** One round: sends what is due. Never rejects; a round asked for during one runs after it. */
  round(): Promise<void>
  /** Resolves once no round runs (at shutdown, before the store closes). */
  settled(): Promise<void>
}

export function createDeliverer(deps: {
  store: Store
  log: Logger
  settings: DeliverySettings
  /** Told of each attempt's outcome: the metrics. */
  onAttempt?: (outcome: DeliveryOutcome['kind']) => void
  /** How endpoints' names are resolved: the system's resolver unless given. */
  resolve?: Resolver
}): Deliverer {
  const { store, log, settings } = deps
  const resolve = deps.resolve ?? ((hostname: string) => lookup(hostname, { all: true }))

  async function send(delivery: DueDelivery): Promise<void> {
    const body =
      delivery.body ??
      JSON.stringify({
        type: delivery.event,
        timestamp: new Date(delivery.createdAt).toISOString(),
        data: present(delivery.media, settings.publicUrl),
      })
    const at = Date.now()
    const secrets = delivery.webhook.secrets
      .filter((s) => s.expiresAt === null || Date.parse(s.expiresAt) > at)
      .map((s) => s.secret)
    const line = log.child({
      deliveryId: delivery.id,
      webhookId: delivery.webhook.id,
      tenant: delivery.webhook.tenant,
      mediaId: delivery.media.id,
      event: delivery.event,
    })
    let outcome: DeliveryOutcome
    const started = performance.now()
    try {
      // The rules may have changed since the endpoint was registered; the resolved addresses are checked in the POST.
      const problem = urlProblem(delivery.webhook.url, settings)
      if (problem) throw new Error(problem)
      const headers = await signedHeaders(secrets, delivery.id, Math.floor(at / 1000), body)
      const answer = await postPinned(delivery.webhook.url, body, {
        headers: { ...headers, 'content-type': 'application/json', 'user-agent': 'media-pipeline-webhooks/1' },
        timeoutMs: settings.timeoutMs,
        rules: settings,
        resolve,
      })
      const { status, text } = answer
      if (status >= 200 && status < 300) outcome = { kind: 'delivered', status }
      else if (status === 410)
        outcome = { kind: 'failed', status: 410, error: 'the endpoint answered 410 Gone', disable: 'answered 410 Gone' }
      else
        outcome = retry(
          delivery,
          status,
          `the endpoint answered ${status}${text ? `: ${text.slice(0, QUOTED)}` : ''}`,
          answer.retryAfter
        )
    } catch (error) {
      outcome = retry(delivery, null, (error as Error).message || String(error), null)
    }
    await store.webhooks.recordAttempt(delivery.id, body, outcome, { at, durationMs: performance.now() - started })
    deps.onAttempt?.(outcome.kind)
    if (outcome.kind === 'delivered')
      line.info({ status: outcome.status, attempt: delivery.attempts + 1 }, `webhook delivered: ${delivery.event}`)
    else
      line.warn(
        { status: outcome.status, attempt: delivery.attempts + 1, error: outcome.error },
        `webhook not delivered (${outcome.kind === 'retry' ? 'will retry' : 'gave up'}): ${outcome.error}`
      )
  }

  /** The next attempt after a failure, or giving up once the schedule runs past the event's time limit. */
  function retry(
    delivery: DueDelivery,
    status: number | null,
    error: string,
    retryAfter: string | null
  ): DeliveryOutcome {
    const attempt = delivery.attempts + 1
    const base = settings.scheduleMs[Math.min(attempt, settings.scheduleMs.length) - 1]!
    // ±10 % jitter, so endpoints coming back are not hit by every retry at once; never before Retry-After.
    const jittered = base * (0.9 + Math.random() * 0.2)
    const asked = retryAfter && /^\d+$/.test(retryAfter) ? Number(retryAfter) * 1000 : 0
    const nextAt = Date.now() + Math.max(jittered, asked)
    if (nextAt > delivery.createdAt + settings.giveUpAfterMs) {
      return { kind: 'failed', status, error: `gave up after ${attempt} attempts: ${error}` }
    }
    return { kind: 'retry', nextAt, status, error }
  }

  let running: Promise<void> | null = null
  let again = false
  async function rounds(): Promise<void> {
    do {
      again = false
      try {
        for (;;) {
          const due = await store.webhooks.claimDue(BATCH, claimMs(settings.timeoutMs))
          if (!due.length) break
          await Promise.all(
            due.map((d) =>
              send(d).catch((error) =>
                log.error({ err: error, deliveryId: d.id }, `webhook delivery failed to record: ${error.message}`)
              )
            )
          )
        }
      } catch (error) {
        log.warn({ err: error }, `webhook round: ${(error as Error).message}; will retry`)
      }
    } while (again)
  }
  return {
    round() {
      if (running) {
        again = true
        return running
      }
      running = rounds().finally(() => {
        running = null
      })
      return running
    },
    settled: () => running ?? Promise.resolve(),
  }
}

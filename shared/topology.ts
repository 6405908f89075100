/**
 * The one description of the broker topology. Backend and processors both declare it before they publish or
 * consume; RabbitMQ refuses a re-declaration with different arguments, so both sides must use exactly this data.
 */
import { cancelExchange, deadLetterExchange, queueNames, type MediaType } from './names.ts'

/**
 * The queues' `x-delivery-limit`: RabbitMQ dead-letters a message returned to its queue more often than this, so a
 * message is delivered at most DELIVERY_LIMIT + 1 times. A processor that crashes on a message (or a host that
 * dies under it) gets that many tries in all; then the job is given up rather than looping.
 */
export const DELIVERY_LIMIT = 5

/**
 * How many attempts a job gets: one per delivery the broker allows. A processor counts attempts as
 * `x-media-attempts + x-delivery-count + 1` (see `attemptOf`, processor/attempts.ts) and reports a transient
 * fault on attempt MAX_ATTEMPTS as `gave_up` instead of retrying, so the job ends before the broker's limit.
 */
export const MAX_ATTEMPTS = DELIVERY_LIMIT + 1

/**
 * How long a processor waits before retrying a request that hit a transient fault (S3 or network down):
 * 1, 2, 4, 8, 16 s, capped at 30 s, so the attempts of one request span about 31 s of outage before it gives up.
 */
export function retryDelayMs(attempt: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, attempt - 1))
}

/**
 * A processor repeats a running job's latest update at least this often (seconds), so a backend can tell a long
 * job from a dead one. Backends treat a `processing` job silent for several heartbeats as stalled.
 */
export const HEARTBEAT_SECONDS = 15

/** A processor sends at most one update per job every this many milliseconds, and then the final one. */
export const UPDATE_INTERVAL_MS = 500

/** The header a processor sets on a request it publishes again: attempts of the job that counted before this copy. */
export const ATTEMPTS_HEADER = 'x-media-attempts'

export interface ExchangeSpec {
  name: string
  type: 'direct' | 'fanout'
  options: { durable: true; autoDelete: false }
}
export interface QueueSpec {
  name: string
  options: { durable: true; arguments: Record<string, string | number> }
}
export interface BindingSpec {
  queue: string
  exchange: string
  routingKey: string
}
export interface Topology {
  exchanges: ExchangeSpec[]
  queues: QueueSpec[]
  bindings: BindingSpec[]
}

/**
 * The exchanges, queues and bindings of one media type.
 *
 * Every working queue is a durable quorum queue with a delivery limit and at-least-once dead-lettering (which
 * RabbitMQ only allows together with `x-overflow: reject-publish`) into `<system>.media.dead-letter`, routed to the
 * type's `.dead` queue. Messages are published to the default exchange, routed by queue name.
 */
export function topology(system: string, type: MediaType): Topology {
  const names = queueNames(system, type)
  const dlx = deadLetterExchange(system)
  const working = (name: string): QueueSpec => ({
    name,
    options: {
      durable: true,
      arguments: {
        'x-queue-type': 'quorum',
        'x-delivery-limit': DELIVERY_LIMIT,
        'x-dead-letter-exchange': dlx,
        'x-dead-letter-routing-key': names.dead,
        'x-dead-letter-strategy': 'at-least-once',
        'x-overflow': 'reject-publish',
      },
    },
  })
  return {
    exchanges: [
      { name: dlx, type: 'direct', options: { durable: true, autoDelete: false } },
      { name: cancelExchange(system), type: 'fanout', options: { durable: true, autoDelete: false } },
    ],
    queues: [
      working(names.request),
      working(names.bulk),
      working(names.updates),
      working(names.results),
      { name: names.dead, options: { durable: true, arguments: { 'x-queue-type': 'quorum' } } },
    ],
    bindings: [{ queue: names.dead, exchange: dlx, routingKey: names.dead }],
  }
}

/** What both sides need to declare a topology; amqplib's channel satisfies it. */
export interface TopologyChannel {
  assertExchange(name: string, type: string, options: ExchangeSpec['options']): Promise<unknown>
  assertQueue(name: string, options: QueueSpec['options']): Promise<unknown>
  bindQueue(queue: string, exchange: string, routingKey: string): Promise<unknown>
}

/** Declares a topology on a channel (idempotent while the arguments are unchanged). */
export async function declareTopology(channel: TopologyChannel, spec: Topology): Promise<void> {
  for (const e of spec.exchanges) await channel.assertExchange(e.name, e.type, e.options)
  for (const q of spec.queues) await channel.assertQueue(q.name, q.options)
  for (const b of spec.bindings) await channel.bindQueue(b.queue, b.exchange, b.routingKey)
}

/**
 * Webhooks and their deliveries. An event is written in the transaction of the change it announces (`recordEvent`,
 * called by jobs.ts), one delivery per endpoint of the tenant that wants it, with the media as it is then; deliveries
 * are claimed by one instance at a time, and every attempt's outcome is recorded.
 */
import { iso, isoNow, num, placeholders, text, type Db, type Queryable, type Row } from './db.ts'
import { readMedia, type MediaRecord } from './media-rows.ts'

/** What a webhook may subscribe to: a media reaching a final state, or deleted. */
export const WEBHOOK_EVENTS = ['media.completed', 'media.failed', 'media.cancelled', 'media.deleted'] as const
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number]

/** A signing secret (`whsec_…`); during a rotation the old one stays valid until `expiresAt`. */
export interface WebhookSecret {
  secret: string
  expiresAt: string | null
}

/** An endpoint a tenant registered, and the events it wants. */
export interface Webhook {
  id: string
  tenant: string
  url: string
  events: WebhookEvent[]
  /** Newest first: every unexpired one signs each delivery. */
  secrets: WebhookSecret[]
  createdAt: string
  /** Set when the endpoint answered 410 Gone (or an operator disabled it): nothing more is sent. */
  disabledAt: string | null
  disabledReason: string | null
}

/** One event for one endpoint, and how its sending goes. Its id is the `webhook-id` header, the same on every attempt. */
export interface WebhookDelivery {
  id: string
  webhookId: string
  event: WebhookEvent
  mediaId: string
  status: 'pending' | 'delivered' | 'failed'
  attempts: number
  nextAt: string | null
  lastStatus: number | null
  lastError: string | null
  createdAt: string
  deliveredAt: string | null
  /** Its attempts, oldest first (the last HISTORY_KEPT of them). */
  history: DeliveryAttempt[]
}

/** One attempt of a delivery: when, how long it took, what the endpoint answered (or the error), and what followed. */
export interface DeliveryAttempt {
  number: number
  at: string
  durationMs: number
  status: number | null
  error: string | null
  outcome: DeliveryOutcome['kind']
}

/** How many of a delivery's attempts its record shows (the schedule makes 10 at most by default). */
const HISTORY_KEPT = 50

/** A delivery due now, with what sending it needs: the media as it was at the event, and its endpoint. */
export interface DueDelivery {
  id: string
  event: WebhookEvent
  /** The media at the event (the body's `data`), as the store reads it. */
  media: MediaRecord
  /** The body as first sent (every retry sends the same bytes), or null before the first attempt. */
  body: string | null
  attempts: number
  /** When the event happened (epoch ms): retries stop a while after it. */
  createdAt: number
  webhook: Webhook
}

/** How an attempt went: delivered; to be tried again at `nextAt`; or given up (the endpoint disabled, on a 410). */
export type DeliveryOutcome =
  | { kind: 'delivered'; status: number }
  | { kind: 'retry'; nextAt: number; status: number | null; error: string }
  | { kind: 'failed'; status: number | null; error: string; disable?: string }

export interface WebhookRepo {
  create(webhook: Webhook): Promise<void>
  /** A tenant's webhooks, newest first. */
  list(tenant: string): Promise<Webhook[]>
  get(id: string): Promise<Webhook | undefined>
  remove(id: string): Promise<boolean>
  setSecrets(id: string, secrets: WebhookSecret[]): Promise<Webhook | undefined>
  /**
   * Deliveries due now, claimed for `leaseMs` (another instance sends them if this one has not by then): each is
   * sent by one instance at a time.
   */
  claimDue(limit: number, leaseMs: number): Promise<DueDelivery[]>
  /**
   * Records an attempt that began at `timing.at` and took `timing.durationMs`: its body (kept for the next ones),
   * its outcome, and the attempt in the delivery's history; a `disable` outcome disables the endpoint.
   */
  recordAttempt(
    id: string,
    body: string,
    outcome: DeliveryOutcome,
    timing: { at: number; durationMs: number }
  ): Promise<void>
  /** An endpoint's deliveries, newest first. */
  deliveries(webhookId: string, limit: number): Promise<WebhookDelivery[]>
  /** Sends a delivery again now (delivered or failed alike); false when there is no such delivery. */
  redeliver(webhookId: string, deliveryId: string): Promise<boolean>
}

const toWebhook = (r: Row): Webhook => ({
  id: String(r.id),
  tenant: String(r.tenant),
  url: String(r.url),
  events: JSON.parse(String(r.events)),
  secrets: JSON.parse(String(r.secrets)),
  createdAt: String(r.created_at),
  disabledAt: text(r.disabled_at),
  disabledReason: text(r.disabled_reason),
})

/**
 * Writes an event for every enabled webhook of the media's tenant that wants it, in the transaction of the change
 * (the outbox of events): with the media as it is now, so each delivery says what the event saw.
 */
export async function recordEvent(tx: Queryable, mediaId: string, event: WebhookEvent): Promise<void> {
  const media = await readMedia(tx, mediaId)
  if (!media) return
  const hooks = await tx.all('SELECT id, events FROM webhooks WHERE tenant = ? AND disabled_at IS NULL', [media.tenant])
  const at = Date.now()
  for (const hook of hooks) {
    if (!(JSON.parse(String(hook.events)) as string[]).includes(event)) continue
    await tx.run(
      "INSERT INTO webhook_deliveries (id, webhook_id, event, media_id, media, status, next_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
      [`msg_${crypto.randomUUID().replaceAll('-', '')}`, String(hook.id), event, mediaId, JSON.stringify(media), at, at]
    )
  }
}

export function createWebhookRepo(db: Db): WebhookRepo {
  return {
    async create(w) {
      await db.run('INSERT INTO webhooks (id, tenant, url, events, secrets, created_at) VALUES (?, ?, ?, ?, ?, ?)', [
        w.id,
        w.tenant,
        w.url,
        JSON.stringify(w.events),
        JSON.stringify(w.secrets),
        w.createdAt,
      ])
    },
    async list(tenant) {
      return (await db.all('SELECT * FROM webhooks WHERE tenant = ? ORDER BY created_at DESC', [tenant])).map(toWebhook)
    },
    async get(id) {
      const row = await db.get('SELECT * FROM webhooks WHERE id = ?', [id])
      return row ? toWebhook(row) : undefined
    },
    async remove(id) {
      return (await db.run('DELETE FROM webhooks WHERE id = ?', [id])) > 0
    },
    async setSecrets(id, secrets) {
      await db.run('UPDATE webhooks SET secrets = ? WHERE id = ?', [JSON.stringify(secrets), id])
      const row = await db.get('SELECT * FROM webhooks WHERE id = ?', [id])
      return row ? toWebhook(row) : undefined
    },
    async claimDue(limit, leaseMs) {
      // Asked every second by every instance: a plain read first, so an idle system takes no write lock.
      const any = await db.get(
        "SELECT 1 AS due FROM webhook_deliveries WHERE status = 'pending' AND next_at <= ? LIMIT 1",
        [Date.now()]
      )
      if (!any) return []
      return db.transaction(async (tx) => {
        const at = Date.now()
        // Rows another instance is sending (claimed, or locked right now) are skipped: each goes out once.
        const rows = await tx.all(
          `SELECT d.id, d.event, d.media, d.body, d.attempts, d.created_at, d.webhook_id FROM webhook_deliveries d
           WHERE d.status = 'pending' AND d.next_at <= ? AND (d.claimed_until IS NULL OR d.claimed_until < ?)
           ORDER BY d.next_at LIMIT ?${db.claimRows}`,
          [at, at, limit]
        )
        const due: DueDelivery[] = []
        for (const row of rows) {
          const hook = await tx.get('SELECT * FROM webhooks WHERE id = ?', [String(row.webhook_id)])
          if (!hook) continue
          if (hook.disabled_at !== null && hook.disabled_at !== undefined) {
            // Disabled since the event was written (it answered 410): nothing more goes to it.
            await tx.run(
              "UPDATE webhook_deliveries SET status = 'failed', last_error = 'the endpoint is disabled' WHERE id = ?",
              [String(row.id)]
            )
            continue
          }
          await tx.run('UPDATE webhook_deliveries SET claimed_until = ? WHERE id = ?', [at + leaseMs, String(row.id)])
          due.push({
            id: String(row.id),
            event: row.event as WebhookEvent,
            media: JSON.parse(String(row.media)) as MediaRecord,
            body: text(row.body),
            attempts: Number(row.attempts),
            createdAt: Number(row.created_at),
            webhook: toWebhook(hook),
          })
        }
        return due
      })
    },
    async recordAttempt(id, body, outcome, timing) {
      await db.transaction(async (tx) => {
        const at = Date.now()
        const status = outcome.kind === 'delivered' ? 'delivered' : outcome.kind === 'retry' ? 'pending' : 'failed'
        await tx.run(
          `UPDATE webhook_deliveries SET body = ?, status = ?, attempts = attempts + 1, next_at = ?, claimed_until = NULL,
           last_status = ?, last_error = ?, delivered_at = ? WHERE id = ?`,
          [
            body,
            status,
            outcome.kind === 'retry' ? outcome.nextAt : at,
            outcome.status,
            outcome.kind === 'delivered' ? null : outcome.error,
            outcome.kind === 'delivered' ? at : null,
            id,
          ]
        )
        // Numbered after the update, which holds the delivery's row: an attempt recorded by another instance at the
        // same moment waits for it, then takes the next number.
        await tx.run(
          `INSERT INTO webhook_attempts (delivery_id, number, at, duration_ms, status, error, outcome)
           SELECT id, attempts, ?, ?, ?, ?, ? FROM webhook_deliveries WHERE id = ?`,
          [
            timing.at,
            Math.round(timing.durationMs),
            outcome.status,
            outcome.kind === 'delivered' ? null : outcome.error,
            outcome.kind,
            id,
          ]
        )
        if (outcome.kind === 'failed' && outcome.disable) {
          await tx.run(
            'UPDATE webhooks SET disabled_at = ?, disabled_reason = ? WHERE id = (SELECT webhook_id FROM webhook_deliveries WHERE id = ?)',
            [isoNow(), outcome.disable, id]
          )
        }
      })
    },
    async deliveries(webhookId, limit) {
      const rows = await db.all(
        'SELECT * FROM webhook_deliveries WHERE webhook_id = ? ORDER BY created_at DESC, id LIMIT ?',
        [webhookId, limit]
      )
      const ids = rows.map((r) => String(r.id))
      const attempts = ids.length
        ? await db.all(
            `SELECT * FROM webhook_attempts WHERE delivery_id IN (${placeholders(ids)}) ORDER BY delivery_id, number`,
            ids
          )
        : []
      const historyOf = (id: string) =>
        attempts
          .filter((a) => a.delivery_id === id)
          .slice(-HISTORY_KEPT)
          .map(
            (a): DeliveryAttempt => ({
              number: Number(a.number),
              at: iso(a.at)!,
              durationMs: Number(a.duration_ms),
              status: num(a.status),
              error: text(a.error),
              outcome: a.outcome as DeliveryAttempt['outcome'],
            })
          )
      return rows.map((r) => ({
        id: String(r.id),
        webhookId: String(r.webhook_id),
        event: r.event as WebhookEvent,
        mediaId: String(r.media_id),
        status: r.status as WebhookDelivery['status'],
        attempts: Number(r.attempts),
        nextAt: r.status === 'pending' ? iso(r.next_at) : null,
        lastStatus: num(r.last_status),
        lastError: text(r.last_error),
        createdAt: iso(r.created_at)!,
        deliveredAt: iso(r.delivered_at),
        history: historyOf(String(r.id)),
      }))
    },
    async redeliver(webhookId, deliveryId) {
      const changed = await db.run(
        "UPDATE webhook_deliveries SET status = 'pending', next_at = ?, claimed_until = NULL WHERE id = ? AND webhook_id = ?",
        [Date.now(), deliveryId, webhookId]
      )
      return changed > 0
    },
  }
}

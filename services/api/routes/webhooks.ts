/**
 * `/v1/webhooks`: a tenant's endpoints, told when its media completes, fails, is cancelled or deleted. Each gets a
 * `whsec_` secret, shown once; deliveries are signed with it (Standard Webhooks, webhooks/sign.ts) and sent at least
 * once (webhooks/deliver.ts). Rotating makes a new secret and keeps the old one valid for a day, so a receiver can
 * switch without missing a delivery. Every delivery and its last attempt can be read, and sent again.
 */
import { Hono } from 'hono'
import * as v from 'valibot'
import type { Caller, Keyed } from '../auth/access.ts'
import {
  NewWebhookSchema,
  WebhookDeliveryListSchema,
  WebhookListSchema,
  WebhookSchema,
  WebhookWithSecretSchema,
} from '../http/bodies.ts'
import { ApiError } from '../http/errors.ts'
import { API_KEY, documenter, jsonAnswer } from '../http/openapi.ts'
import type { Webhook, WebhookRepo } from '../store/webhooks.ts'
import { json, param } from '../http/validate.ts'
import { urlProblem, type DestinationRules } from '../webhooks/destination.ts'
import { newSecret } from '../webhooks/sign.ts'

/** How long a rotated-out secret keeps signing deliveries. */
const ROTATION_OVERLAP_MS = 24 * 3_600_000
/** How many deliveries the list answers (newest first). */
const DELIVERIES_SHOWN = 100

const IdParams = v.object({ id: v.pipe(v.string(), v.uuid()) })
const DeliveryParams = v.object({
  id: v.pipe(v.string(), v.uuid()),
  deliveryId: v.pipe(v.string(), v.regex(/^msg_[0-9a-f]{32}$/)),
})
const doc = documenter({ tag: 'webhooks', security: API_KEY, errors: [401, 429] })

/** A webhook as its tenant sees it: never its secrets (the one made is shown once, by create and rotate). */
const show = (w: Webhook): v.InferOutput<typeof WebhookSchema> => ({
  id: w.id,
  url: w.url,
  events: w.events,
  createdAt: w.createdAt,
  disabledAt: w.disabledAt,
  disabledReason: w.disabledReason,
})

export interface WebhookRouteDeps {
  webhooks: WebhookRepo
  /** Where webhooks may point, and a way to have due deliveries sent now. */
  destinations: DestinationRules & { kick(): void }
}

export function webhookRoutes(deps: WebhookRouteDeps, keyed: Keyed) {
  /** The caller's webhook of that id; 404 alike for one that does not exist and one of another tenant. */
  const find = async (id: string, tenant: string): Promise<Webhook> => {
    const webhook = await deps.webhooks.get(id)
    if (!webhook || webhook.tenant !== tenant) throw new ApiError(404, 'not_found', `no webhook with id ${id}`)
    return webhook
  }
  return (
    new Hono<Caller>()
      .use('*', keyed)

      .post('/', createDoc, json(NewWebhookSchema), async (c) => {
        const { url, events } = c.req.valid('json')
        const problem = urlProblem(url, deps.destinations)
        if (problem) throw new ApiError(400, 'bad_request', problem)
        const secret = newSecret()
        const webhook: Webhook = {
          id: crypto.randomUUID(),
          tenant: c.get('tenant'),
          url,
          events: [...new Set(events)],
          secrets: [{ secret, expiresAt: null }],
          createdAt: new Date().toISOString(),
          disabledAt: null,
          disabledReason: null,
        }
        await deps.webhooks.create(webhook)
        c.header('Location', `/v1/webhooks/${webhook.id}`)
        return c.json({ ...show(webhook), secret }, 201)
      })

      .get('/', listDoc, async (c) => {
        const webhooks = await deps.webhooks.list(c.get('tenant'))
        return c.json({ webhooks: webhooks.map(show) } satisfies v.InferOutput<typeof WebhookListSchema>, 200)
      })

      .get('/:id', getDoc, param(IdParams, 404), async (c) =>
        c.json(show(await find(c.req.valid('param').id, c.get('tenant'))), 200)
      )

      .delete('/:id', deleteDoc, param(IdParams, 404), async (c) => {
        const webhook = await find(c.req.valid('param').id, c.get('tenant'))
        await deps.webhooks.remove(webhook.id)
        return c.body(null, 204)
      })

      /** A new secret; the old ones stay valid (and sign each delivery beside it) for a day. */
      .post('/:id/rotate', rotateDoc, param(IdParams, 404), async (c) => {
        const webhook = await find(c.req.valid('param').id, c.get('tenant'))
        const at = Date.now()
        const until = new Date(at + ROTATION_OVERLAP_MS).toISOString()
        const secret = newSecret()
        const kept = webhook.secrets
          .filter((s) => s.expiresAt === null || Date.parse(s.expiresAt) > at)
          .map((s) => ({ ...s, expiresAt: s.expiresAt ?? until }))
        const updated = await deps.webhooks.setSecrets(webhook.id, [{ secret, expiresAt: null }, ...kept])
        if (!updated) throw new ApiError(404, 'not_found', `no webhook with id ${webhook.id}`)
        return c.json({ ...show(updated), secret }, 200)
      })

      .get('/:id/deliveries', deliveriesDoc, param(IdParams, 404), async (c) => {
        const webhook = await find(c.req.valid('param').id, c.get('tenant'))
        const deliveries = await deps.webhooks.deliveries(webhook.id, DELIVERIES_SHOWN)
        return c.json({ deliveries } satisfies v.InferOutput<typeof WebhookDeliveryListSchema>, 200)
      })

      .post('/:id/deliveries/:deliveryId/redeliver', redeliverDoc, param(DeliveryParams, 404), async (c) => {
        const { id, deliveryId } = c.req.valid('param')
        const webhook = await find(id, c.get('tenant'))
        if (!(await deps.webhooks.redeliver(webhook.id, deliveryId)))
          throw new ApiError(404, 'not_found', `no delivery ${deliveryId} of webhook ${id}`)
        deps.destinations.kick()
        return c.json({ redelivered: deliveryId }, 202)
      })
  )
}

const createDoc = doc({
  operationId: 'createWebhook',
  summary: 'Register an endpoint for media events',
  description:
    'Deliveries are POSTed as `{type, timestamp, data}`, where `data` is the media as GET /v1/media/{id} answers it, signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`). A 2xx answer delivers; 410 disables the endpoint; anything else is retried with backoff for up to 3 days.',
  responses: { 201: jsonAnswer('Registered; `secret` is shown this once.', WebhookWithSecretSchema) },
  errors: [400],
})
const listDoc = doc({
  operationId: 'listWebhooks',
  summary: "The tenant's webhooks",
  responses: { 200: jsonAnswer('Its webhooks, newest first.', WebhookListSchema) },
})
const getDoc = doc({
  operationId: 'getWebhook',
  summary: 'One webhook',
  responses: { 200: jsonAnswer('The webhook.', WebhookSchema) },
  errors: [404],
})
const deleteDoc = doc({
  operationId: 'deleteWebhook',
  summary: 'Remove a webhook and its deliveries',
  responses: { 204: { description: 'Removed.' } },
  errors: [404],
})
const rotateDoc = doc({
  operationId: 'rotateWebhookSecret',
  summary: 'Make a new secret; the old one keeps signing for 24 hours',
  responses: { 200: jsonAnswer('The webhook with its new `secret`, shown this once.', WebhookWithSecretSchema) },
  errors: [404],
})
const deliveriesDoc = doc({
  operationId: 'listWebhookDeliveries',
  summary: "A webhook's deliveries, newest first, with their last attempt",
  responses: { 200: jsonAnswer('Its last 100 deliveries.', WebhookDeliveryListSchema) },
  errors: [404],
})
const redeliverDoc = doc({
  operationId: 'redeliverWebhook',
  summary: 'Send a delivery again now',
  responses: { 202: jsonAnswer('Queued to be sent.', v.object({ redelivered: v.string() })) },
  errors: [404],
})

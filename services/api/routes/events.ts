/**
 * The tenant's live events: `GET /v1/events` (Server-Sent Events), `POST /v1/events/tokens` (a token that opens a
 * socket from a browser) and `GET /v1/ws` (one WebSocket, events/socket.ts). The socket's upgrade is the adapter's
 * (adapter/websocket.ts): the one runtime-specific part.
 */
import { Hono } from 'hono'
import { createMiddleware } from 'hono/factory'
import type { UpgradeWebSocket } from 'hono/ws'
import * as v from 'valibot'
import { type Caller, type Keyed } from '../auth/access.ts'
import type { EventTokens } from '../auth/event-tokens.ts'
import { ApiError } from '../http/errors.ts'
import { API_KEY, documenter, eventStreamAnswer, jsonAnswer } from '../http/openapi.ts'
import { query } from '../http/validate.ts'
import type { EventHub } from '../events/hub.ts'
import { EventsQuery } from '../events/payload.ts'
import type { StreamSlots } from '../events/slots.ts'
import { CLOSE, socketEvents } from '../events/socket.ts'
import type { MediaRepo } from '../store/media.ts'
import { followTenant, tooManyStreams } from '../events/stream.ts'

export interface EventRouteDeps {
  media: MediaRepo
  hub: EventHub
  slots: StreamSlots
  tokens: EventTokens
  upgradeWebSocket: UpgradeWebSocket
}

const TokenSchema = v.object({
  token: v.pipe(v.string(), v.description('Opens a socket: `GET /v1/ws?token=…` or `{"type":"auth","token":…}`.')),
  expiresAt: v.pipe(v.string(), v.description('It opens no socket after this (a minute); a socket it opened stays.')),
})

const doc = documenter({ tag: 'events', security: API_KEY, errors: [401, 429] })

/** `/v1/events` and `/v1/events/tokens`, behind the key. */
export function eventRoutes(deps: EventRouteDeps, keyed: Keyed) {
  return new Hono<Caller>()
    .use('*', keyed)
    .get('/', eventsDoc, query(EventsQuery), async (c) => {
      const { kind, status, media, after } = c.req.valid('query')
      const lastId = c.req.header('last-event-id')
      if (lastId !== undefined && !/^\d{1,15}$/.test(lastId))
        throw new ApiError(400, 'bad_request', 'header Last-Event-ID must be an event id')
      const from = lastId !== undefined ? Number(lastId) : (after ?? null)
      return followTenant(
        c,
        deps,
        { tenant: c.get('tenant'), keyId: c.get('keyId') },
        { kinds: kind, statuses: status, media },
        from
      )
    })
    .post('/tokens', tokenDoc, async (c) =>
      c.json(
        (await deps.tokens.issue({ tenant: c.get('tenant'), keyId: c.get('keyId') })) satisfies v.InferOutput<
          typeof TokenSchema
        >,
        201
      )
    )
}

/**
 * `/v1/ws`. The upgrade is authenticated when it can be (the Authorization header through `keyed`, or `?token=`); a
 * browser may instead send its token as the first message. A refused key or token is a 401 before any upgrade.
 */
export function socketRoute(deps: EventRouteDeps, keyed: Keyed) {
  // A key in the Authorization header is checked (and its request counted) as on every keyed route.
  const keyedIfHeader = createMiddleware<Caller>((c, next) =>
    c.req.query('token') === undefined && c.req.header('authorization') !== undefined ? keyed(c, next) : next()
  )
  return new Hono<Caller>().use('*', keyedIfHeader).get('/', socketDoc, async (c, next) => {
    if (c.req.header('upgrade')?.toLowerCase() !== 'websocket')
      throw new ApiError(426, 'upgrade_required', 'this is a WebSocket: connect with Upgrade: websocket')
    let caller: { tenant: string; keyId: string } | null = null
    const token = c.req.query('token')
    if (token !== undefined) {
      caller = await deps.tokens.verify(token)
      if (!caller) throw new ApiError(401, 'unauthorized', 'the token is not valid (unknown, changed or expired)')
    } else if (c.req.header('authorization') !== undefined) {
      caller = { tenant: c.get('tenant'), keyId: c.get('keyId') }
    }
    const origin = new URL(c.req.url).origin
    const events = socketEvents(deps, caller && { tenant: caller.tenant, keyId: caller.keyId }, origin)
    return deps.upgradeWebSocket(() => events)(c, next)
  })
}

export { CLOSE as SOCKET_CLOSE, tooManyStreams }

const eventsDoc = doc({
  operationId: 'events',
  summary: "Follow every change of the tenant's media (Server-Sent Events)",
  description:
    "First event `ready` (its id, and data `{after}`: where the stream starts, the id given or else the log's latest), then one event `media` per change, its `id` the change's number in the tenant's log and its data a MediaEvent. Resume exactly after an event with `Last-Event-ID` (or `?after=`): the log is replayed from there; an id older than the log's window answers 409 `events_expired` (read the media again, then follow from its `X-Latest-Event-Id`). Without either, the stream starts now. Filters: `kind`, `status`, `media`. A comment every 15 s keeps proxies from closing it. EventSource cannot send the Authorization header: read it with fetch, or use the WebSocket with a token.",
  errors: [400, 409],
  responses: {
    200: eventStreamAnswer(
      'Event `ready`, then events `media` whose data is `{id, type, mediaId, media, at}`: the id as above; `type` one of created, queued, processing, completed, failed, cancelled, reprocessing, deleted; `media` the Media after the change (null once deleted); `at` when it was applied.'
    ),
  },
})

const socketDoc = doc({
  operationId: 'eventSocket',
  summary: 'One WebSocket for every change of the tenant (or of chosen media)',
  description:
    'Upgrade with the Authorization header (servers) or `?token=` from POST /v1/events/tokens (browsers), or send `{"type":"auth","token":…}` within 5 s. Client messages: `subscribe {media?: [ids], all?: true}`, `unsubscribe {media?, all?}`, `resume {after}`, `ping {id?}`; server messages: `subscribed {media, all}`, `event {event}` (the MediaEvent of GET /v1/events, or on subscribe `{type: "state", mediaId, media}`), `error {code, message}`, `pong {id?}`. Close codes: 4401 not authenticated in time (or a bad token), 4429 too many streams for the key, 4409 resume past the log window, 1009 a message over 16 KiB. See docs/events.md.',
  errors: [400, 426],
  responses: { 101: { description: 'Switched to the WebSocket protocol.' } },
})

const tokenDoc = doc({
  operationId: 'createEventToken',
  summary: 'A token to open the event WebSocket from a browser',
  description:
    'A browser cannot set the Authorization header on a WebSocket: open `/v1/ws?token=<token>` (or send `{"type":"auth","token":…}` first) within a minute. The token names the key\'s tenant; it opens sockets, nothing else.',
  responses: { 201: jsonAnswer('The token.', TokenSchema) },
})

/**
 * `GET /v1/ws`: the same events over one WebSocket, with subscriptions. A server authenticates with the Authorization
 * header; a browser with a token from `POST /v1/events/tokens` (`?token=`), or a first `auth` message within
 * AUTH_TIMEOUT_MS. Messages are JSON objects with a `type` (docs/events.md has an example of each):
 *
 * - client: `auth {token}`, `subscribe {media?: [ids], all?: true}`, `unsubscribe {media?, all?}`,
 *   `resume {after}` (replays the log after that id, through the subscriptions), `ping {id?}`;
 * - server: `subscribed {media, all}`, `event {event}` (the SSE payload), `error {code, message, media?}`,
 *   `pong {id?}`.
 *
 * `subscribe` sends the current state of each media named first (`event` of type `state`, its id the log's latest),
 * so a reconnect needs no replay. A media of another tenant (or none) answers `error` `not_found` naming it and is
 * never followed. A malformed message answers `error` and the socket stays open. Close codes: 4401 no valid
 * authentication in time, 4429 the key holds too many streams, 4409 `resume` past the log's window (re-read, then
 * subscribe again), 1009 a message over MAX_MESSAGE_BYTES, 1011 the server failed.
 */
import * as v from 'valibot'
import { MediaIdSchema } from '@app/shared'
import type { WSContext, WSEvents } from 'hono/ws'
import type { TokenClaims } from '../auth/event-tokens.ts'
import { present } from '../http/present.ts'
import type { MediaRepo } from '../store/media.ts'
import type { LoggedEvent } from '../store/events.ts'
import { ResumeError, type EventHub } from './hub.ts'
import { eventJson } from './payload.ts'
import type { StreamSlots } from './slots.ts'

export const AUTH_TIMEOUT_MS = 5_000
export const MAX_MESSAGE_BYTES = 16 * 1024
/** Media one `subscribe` may name. */
const MAX_MEDIA = 1000

export const CLOSE = { unauthenticated: 4401, tooMany: 4429, expired: 4409, tooBig: 1009, failed: 1011 } as const

const MediaList = v.pipe(v.array(MediaIdSchema), v.maxLength(MAX_MEDIA, `may name at most ${MAX_MEDIA} media`))
const ClientMessage = v.variant(
  'type',
  [
    v.object({ type: v.literal('auth'), token: v.pipe(v.string(), v.maxLength(1024)) }),
    v.object({ type: v.literal('subscribe'), media: v.optional(MediaList), all: v.optional(v.boolean()) }),
    v.object({ type: v.literal('unsubscribe'), media: v.optional(MediaList), all: v.optional(v.boolean()) }),
    v.object({ type: v.literal('resume'), after: v.pipe(v.number(), v.integer(), v.minValue(0)) }),
    v.object({ type: v.literal('ping'), id: v.optional(v.pipe(v.string(), v.maxLength(64))) }),
  ],
  'must be an object whose type is auth, subscribe, unsubscribe, resume or ping'
)

export interface SocketDeps {
  hub: EventHub
  slots: StreamSlots
  media: Pick<MediaRepo, 'get'>
  tokens: { verify(token: string): Promise<TokenClaims | null> }
}

/** The socket's events, for `upgradeWebSocket`: `caller` when the upgrade was authenticated, else null. */
export function socketEvents(
  deps: SocketDeps,
  caller: { tenant: string; keyId: string } | null,
  origin: string
): WSEvents {
  let ws: WSContext | undefined
  let who: { tenant: string; keyId: string } | null = null
  let release: (() => void) | null = null
  let following: { stop: () => void } | null = null
  let authTimer: ReturnType<typeof setTimeout> | undefined
  let closed = false
  const subscription = { all: false, media: new Set<string>() }

  const send = (message: object) => {
    if (closed || !ws) return
    ws.send(JSON.stringify(message))
  }
  const shut = (code: number, reason: string) => {
    if (closed) return
    ws?.close(code, reason)
    end()
  }
  const end = () => {
    closed = true
    clearTimeout(authTimer)
    following?.stop()
    release?.()
  }
  const error = (code: string, message: string, extra: object = {}) => send({ type: 'error', code, message, ...extra })

  const deliver = (event: LoggedEvent) => {
    if (closed || !ws || (!subscription.all && !subscription.media.has(event.mediaId))) return
    ws.send(`{"type":"event","event":${eventJson(event, origin)}}`)
  }

  /** Follows the tenant's log from `after` (null: from now); a resume replaces the following before it. */
  async function follow(after: number | null): Promise<void> {
    following?.stop()
    following = null
    try {
      const started = await deps.hub.follow(who!.tenant, after, {
        deliver,
      })
      if (closed) return started.stop()
      following = started
    } catch (failure) {
      if (failure instanceof ResumeError) {
        error(failure.why === 'expired' ? 'events_expired' : 'bad_request', failure.message, { latest: failure.latest })
        if (failure.why === 'expired') shut(CLOSE.expired, 'resume past the log window')
        return
      }
      shut(CLOSE.failed, 'the event log could not be read')
    }
  }

  async function authenticate(claims: { tenant: string; keyId: string }): Promise<void> {
    clearTimeout(authTimer)
    release = await deps.slots.take(claims.keyId)
    if (!release) return shut(CLOSE.tooMany, `this API key holds ${deps.slots.max} streams already`)
    who = claims
    await follow(null)
  }

  async function subscribe(media: string[] | undefined, all: boolean | undefined): Promise<void> {
    if (all) subscription.all = true
    const known: string[] = []
    const unknown: string[] = []
    const states: object[] = []
    for (const id of new Set(media ?? [])) {
      const found = await deps.media.get(id)
      // Another tenant's media is answered as one that does not exist: which ids exist is nobody else's business.
      if (!found || found.tenant !== who!.tenant) unknown.push(id)
      else {
        known.push(id)
        states.push({ type: 'state', mediaId: id, media: present(found, origin) })
      }
    }
    for (const id of known) subscription.media.add(id)
    if (unknown.length) error('not_found', `no media ${unknown.join(', ')} of this tenant`, { media: unknown })
    send({ type: 'subscribed', media: known, all: subscription.all })
    for (const state of states) send({ type: 'event', event: state })
  }

  async function onMessage(data: unknown): Promise<void> {
    const size = typeof data === 'string' ? new TextEncoder().encode(data).byteLength : (data as ArrayBuffer).byteLength
    if (size > MAX_MESSAGE_BYTES) return shut(CLOSE.tooBig, `a message may be at most ${MAX_MESSAGE_BYTES} bytes`)
    let json: unknown
    try {
      json = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data as ArrayBuffer))
    } catch {
      return error('bad_request', 'a message must be a JSON object')
    }
    const parsed = v.safeParse(ClientMessage, json)
    if (!parsed.success) {
      const issue = parsed.issues[0]
      const path = issue.path?.map((p) => p.key).join('.')
      return error('bad_request', `${path ? `${path} ` : ''}${issue.message}`)
    }
    const message = parsed.output
    if (message.type === 'ping') return send({ type: 'pong', ...(message.id ? { id: message.id } : {}) })
    if (!who) {
      if (message.type !== 'auth') return error('unauthorized', 'authenticate first: send {"type":"auth","token":…}')
      const claims = await deps.tokens.verify(message.token)
      if (!claims) return shut(CLOSE.unauthenticated, 'the token is not valid (unknown, changed or expired)')
      return authenticate(claims)
    }
    if (message.type === 'auth') return error('bad_request', 'this socket is authenticated already')
    if (message.type === 'subscribe') return subscribe(message.media, message.all)
    if (message.type === 'unsubscribe') {
      if (message.all) subscription.all = false
      for (const id of message.media ?? []) subscription.media.delete(id)
      return send({ type: 'subscribed', media: [...subscription.media], all: subscription.all })
    }
    return follow(message.after)
  }

  // Messages are handled one after another: a subscribe's states go out before the events of the next message.
  let turn = Promise.resolve()
  return {
    onOpen(_event, context) {
      ws = context
      if (caller) {
        turn = turn.then(() => authenticate(caller))
        return
      }
      authTimer = setTimeout(
        () => shut(CLOSE.unauthenticated, `no authentication within ${AUTH_TIMEOUT_MS / 1000} s`),
        AUTH_TIMEOUT_MS
      )
    },
    onMessage(event) {
      turn = turn.then(() => onMessage(event.data)).catch(() => shut(CLOSE.failed, 'the server failed'))
    },
    onClose: end,
    onError: end,
  }
}

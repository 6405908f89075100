/**
 * `GET /v1/events`: every change of the tenant's media as Server-Sent Events, each with its `id:` (its number in the
 * tenant's log), filtered by kind, status and media. `Last-Event-ID` (or `?after=`) resumes exactly after that
 * event, replayed from the log; an id older than what the log keeps answers 409 `events_expired` (re-read the media,
 * then follow from the `X-Latest-Event-Id` the error gives). A comment every 15 s keeps proxies from closing an idle stream.
 */
import type { Context } from 'hono'
import { streamSSE } from 'hono/streaming'
import { ApiError } from '../http/errors.ts'
import type { LoggedEvent } from '../store/events.ts'
import { ResumeError, type EventHub } from './hub.ts'
import { eventJson, passes, type EventFilter } from './payload.ts'
import type { StreamSlots } from './slots.ts'

const HEARTBEAT_MS = 15_000
/** Events waiting for a client that reads too slowly: past this, its stream is closed (it resumes from its last id). */
export const MAX_BEHIND = 10_000

export async function followTenant(
  c: Context,
  deps: { hub: EventHub; slots: StreamSlots },
  caller: { tenant: string; keyId: string },
  filter: EventFilter,
  after: number | null
): Promise<Response> {
  const release = await deps.slots.take(caller.keyId)
  if (!release) throw tooManyStreams(deps.slots.max)
  const origin = new URL(c.req.url).origin
  // Events that come while the stream is being set up wait here, in order.
  const queue: LoggedEvent[] = []
  let wake = () => {}
  let open = true
  const close = () => {
    open = false
    wake()
  }
  let following: { from: number; stop: () => void }
  try {
    following = await deps.hub.follow(caller.tenant, after, {
      deliver(event) {
        if (queue.length >= MAX_BEHIND) return close()
        queue.push(event)
        wake()
      },
    })
  } catch (error) {
    release()
    if (error instanceof ResumeError)
      throw new ApiError(
        error.why === 'expired' ? 409 : 400,
        error.why === 'expired' ? 'events_expired' : 'bad_request',
        error.message,
        {
          'X-Latest-Event-Id': String(error.latest),
        }
      )
    throw error
  }
  return streamSSE(c, async (stream) => {
    stream.onAbort(close)
    const heartbeat = setInterval(() => {
      stream.write(': keep-alive\n\n').catch(close)
    }, HEARTBEAT_MS)
    try {
      // The first event says where the stream starts: every event after it is past that id (so a client that breaks
      // off before any resumes there, missing nothing that was replayed or came meanwhile).
      await stream.writeSSE({
        id: String(following.from),
        event: 'ready',
        data: JSON.stringify({ after: following.from }),
      })
      while (open) {
        const event = queue.shift()
        if (!event) {
          await new Promise<void>((resolve) => (wake = resolve))
          continue
        }
        if (!passes(filter, event)) continue
        await stream.writeSSE({ id: String(event.seq), event: 'media', data: eventJson(event, origin) })
      }
    } catch {
      // the client went away mid-write
    } finally {
      clearInterval(heartbeat)
      following.stop()
      release()
    }
  })
}

export const tooManyStreams = (max: number) =>
  new ApiError(
    429,
    'too_many_streams',
    `this API key already holds ${max} event streams or sockets open; close one first`,
    {
      'Retry-After': '5',
    }
  )

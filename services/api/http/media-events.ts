/**
 * Following one media as Server-Sent Events: the current state first (event `state`), then each change, then the
 * stream ends after the final state (of a reprocess too, when one runs), or after event `deleted`. Each state's `id`
 * is the number of the media's latest change in the tenant's event log, so a client that resumes with
 * `Last-Event-ID` is not sent again the state it has (the stream then waits for the next change, or ends at once if
 * the media is final). Changes applied on this instance are heard at once; those applied by another come over the
 * events fanout (jobs/changes.ts). A heartbeat comment keeps proxies from closing an idle stream, and re-reads the
 * state, which covers an announcement that was lost.
 */
import type { Context } from 'hono'
import { streamSSE } from 'hono/streaming'
import type { Changes } from '../jobs/changes.ts'
import type { EventRepo } from '../store/events.ts'
import type { MediaRepo } from '../store/media.ts'
import { isFinal } from '../store/rules.ts'
import { present } from './present.ts'

const HEARTBEAT_MS = 15_000

export function followMedia(
  c: Context,
  deps: { media: Pick<MediaRepo, 'get'>; changes: Pick<Changes, 'watch'>; events: Pick<EventRepo, 'latestOf'> },
  id: string
): Response {
  const origin = new URL(c.req.url).origin
  const resumed = c.req.header('last-event-id')
  return streamSSE(c, async (stream) => {
    let last = ''
    // The client has every state up to this change (a malformed id is taken as none).
    let seen = resumed && /^\d{1,15}$/.test(resumed) ? Number(resumed) : 0
    /** Sends the state if it changed; resolves true once there is nothing more to send. */
    const sendState = async (): Promise<boolean> => {
      const media = await deps.media.get(id)
      if (!media) {
        await stream.writeSSE({ event: 'deleted', data: JSON.stringify({ id }) })
        return true
      }
      const data = JSON.stringify(present(media, origin))
      const change = await deps.events.latestOf(id)
      if (data !== last && change > seen) {
        last = data
        seen = change
        await stream.writeSSE({ event: 'state', data, id: String(change) })
      }
      // A reprocess still running is followed to its end too (the media's own status stays final meanwhile).
      return isFinal(media.status) && (!media.reprocess || isFinal(media.reprocess.status))
    }
    if (await sendState()) return
    await new Promise<void>((resolve) => {
      let queue = Promise.resolve(false)
      const finish = () => {
        unwatch()
        clearInterval(heartbeat)
        resolve()
      }
      // Sends run one after another, so states go out in order.
      const onChange = () => {
        queue = queue
          .then(async (done) => done || (await sendState()))
          .then(
            (done) => {
              if (done) finish()
              return done
            },
            () => {
              finish() // the client went away mid-write
              return true
            }
          )
      }
      const unwatch = deps.changes.watch(id, onChange)
      // A comment keeps proxies from closing an idle stream; the re-read covers an announcement that was lost.
      const heartbeat = setInterval(() => {
        stream.write(': keep-alive\n\n').catch(finish)
        onChange()
      }, HEARTBEAT_MS)
      stream.onAbort(finish)
      onChange() // a change between the first read and subscribing
    })
  })
}

/**
 * Following a media live: its Server-Sent Events (`GET /v1/media/:id/events`) read with fetch, since EventSource
 * cannot send the API key. A stream that breaks before the final state is opened again; the first event of each
 * stream is the current state, so nothing is missed.
 *
 * A browser opens at most six connections to one origin over HTTP/1.1, and uploads need some: at most
 * `MAX_STREAMS` media are followed over SSE at a time, and the rest are read every few seconds until a stream frees.
 */
import { createParser } from 'eventsource-parser'
import { api, problemOf, read, send, type Media } from './api.ts'
import { isFinal as isFinalStatus } from '../../../../shared/messages.ts'
import { keyHeaders } from './session.ts'

const MAX_STREAMS = 3
const POLL_MS = 2_000
const RETRY_MS = 1_000
/** Whether a media has reached its final state (the protocol's rule, shared/messages.ts). */
export const isFinal = (media: Pick<Media, 'status'>) => isFinalStatus(media.status)

export interface Watcher {
  /** Each new state, in order; the last one is final. */
  onState(media: Media): void
  /** The media was deleted. */
  onDeleted?(): void
}

let streams = 0

/** Follows a media until its final state or `stop()`. */
export function follow(id: string, watcher: Watcher): () => void {
  const abort = new AbortController()
  void run(id, watcher, abort.signal).catch(() => {})
  return () => abort.abort()
}

async function run(id: string, watcher: Watcher, signal: AbortSignal): Promise<void> {
  let done = false
  const onState = (media: Media) => {
    watcher.onState(media)
    done = isFinal(media)
  }
  while (!done && !signal.aborted) {
    if (streams < MAX_STREAMS) {
      streams++
      try {
        done = await stream(id, { onState, onDeleted: watcher.onDeleted }, signal)
      } catch {
        // broken off: opened again below
      } finally {
        streams--
      }
      if (!done) await pause(RETRY_MS, signal)
    } else {
      try {
        const res = await api.v1.media[':id'].$get({ param: { id } }, { init: { signal } })
        if (res.status === 404) return watcher.onDeleted?.()
        onState(await read<Media>(res))
      } catch {
        // no answer this time: asked again below
      }
      if (!done) await pause(POLL_MS, signal)
    }
  }
}

/** One event stream, to its end; true when it ended at the final state (or deletion). */
async function stream(id: string, watcher: Watcher, signal: AbortSignal): Promise<boolean> {
  const res = await send(`/v1/media/${id}/events`, {
    headers: { ...keyHeaders(), accept: 'text/event-stream' },
    signal,
  })
  if (res.status === 404) {
    watcher.onDeleted?.()
    return true
  }
  if (!res.ok) {
    await problemOf(res) // a refused key signs the console out
    return false
  }
  if (!res.body) return false
  let finished = false
  const parser = createParser({
    onEvent(event) {
      if (event.event === 'deleted') {
        finished = true
        watcher.onDeleted?.()
      } else if (event.event === 'state') {
        const media = JSON.parse(event.data) as Media
        watcher.onState(media)
        finished = isFinal(media)
      }
    },
  })
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) return finished
    parser.feed(value)
  }
}

const pause = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
  })

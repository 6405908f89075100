/**
 * The tenant's changes, live, over one connection for the whole page: `GET /v1/events` (Server-Sent Events) read
 * with fetch, since EventSource cannot send the API key. It opens when the first watcher comes and closes when the
 * last goes. A stream that breaks is opened again after the last event it gave (`Last-Event-ID`), so nothing is
 * missed; told that id is too old (409), the page reads each watched media again and follows from then on.
 *
 * A browser opens at most six connections to one origin over HTTP/1.1, and uploads need them: however many media
 * the page follows, this is one.
 */
import { createParser } from 'eventsource-parser'
import { api, problemOf, read, send, type Media } from './api.ts'
import { isFinal as isFinalStatus } from '../../../../shared/messages.ts'
import { keyHeaders } from './session.ts'

const RETRY_MS = 1_000
/** Whether a media has reached its final state (the protocol's rule, shared/messages.ts). */
export const isFinal = (media: Pick<Media, 'status'>) => isFinalStatus(media.status)

export interface Watcher {
  /** Each new state, in order; the last one is final. */
  onState(media: Media): void
  /** The media was deleted. */
  onDeleted?(): void
}

/** One event of the tenant's stream (docs/events.md). */
interface MediaEvent {
  id: number
  type: string
  mediaId: string
  media: Media | null
}

const watchers = new Map<string, Set<Watcher>>()
const anyChange = new Set<() => void>()
let connection: AbortController | null = null
let lastId: string | null = null

/** Follows a media until `stop()`: its current state first, then each change. */
export function follow(id: string, watcher: Watcher): () => void {
  let latest = ''
  // A state read before an event that was already on its way is newer than that event: never shown after it.
  const onState = (media: Media) => {
    if (media.updatedAt < latest) return
    latest = media.updatedAt
    watcher.onState(media)
  }
  const mine: Watcher = { onState, onDeleted: () => watcher.onDeleted?.() }
  watchers.set(id, (watchers.get(id) ?? new Set()).add(mine))
  connect()
  void readNow(id, mine)
  return () => {
    const set = watchers.get(id)
    set?.delete(mine)
    if (!set?.size) watchers.delete(id)
    disconnectIfIdle()
  }
}

/** Calls `listener` after any change of the tenant's media (the library reads its page again), until `stop()`. */
export function onAnyChange(listener: () => void): () => void {
  anyChange.add(listener)
  connect()
  return () => {
    anyChange.delete(listener)
    disconnectIfIdle()
  }
}

async function readNow(id: string, watcher: Watcher): Promise<void> {
  try {
    const res = await api.v1.media[':id'].$get({ param: { id } })
    if (res.status === 404) return watcher.onDeleted?.()
    watcher.onState(await read<Media>(res))
  } catch {
    // no answer this time: the stream's next event of it says the rest
  }
}

function connect(): void {
  if (connection) return
  const abort = new AbortController()
  connection = abort
  void (async () => {
    while (!abort.signal.aborted) {
      try {
        await stream(abort.signal)
      } catch {
        // broken off: opened again below, after the last event it gave
      }
      await pause(RETRY_MS, abort.signal)
    }
  })()
}

function disconnectIfIdle(): void {
  if (watchers.size || anyChange.size || !connection) return
  connection.abort()
  connection = null
  lastId = null
}

async function stream(signal: AbortSignal): Promise<void> {
  const res = await send('/v1/events', {
    headers: { ...keyHeaders(), accept: 'text/event-stream', ...(lastId ? { 'last-event-id': lastId } : {}) },
    signal,
  })
  if (res.status === 409) {
    // Too long away: what changed meanwhile is read again, and the stream starts from now.
    lastId = null
    for (const [id, set] of watchers) for (const watcher of set) void readNow(id, watcher)
    for (const listener of anyChange) listener()
    return
  }
  if (!res.ok) {
    await problemOf(res) // a refused key signs the console out
    return
  }
  if (!res.body) return
  const parser = createParser({
    onEvent(event) {
      if (event.id) lastId = event.id
      if (event.event !== 'media') return
      const change = JSON.parse(event.data) as MediaEvent
      for (const watcher of watchers.get(change.mediaId) ?? []) {
        if (change.media) watcher.onState(change.media)
        else watcher.onDeleted?.()
      }
      for (const listener of anyChange) listener()
    },
  })
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) return
    parser.feed(value)
  }
}

const pause = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
  })

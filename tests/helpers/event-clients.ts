/**
 * Clients of the tenant's live events, for tests and the benchmark: an SSE reader of `/v1/events` and a WebSocket
 * client of `/v1/ws` that keep what they receive, and wait for it with a deadline.
 */

export interface MediaEventBody {
  id: number
  type: string
  mediaId: string
  media: { status: string; progress: number } | null
  at: string
}

/** Polls `check` until it holds; fails after `timeoutMs`, naming what it waited for. */
export async function until(check: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`waited ${timeoutMs} ms for ${what}`)
    await Bun.sleep(10)
  }
}

/** Reads `/v1/events` on `url` (with `headers`) until `stop()`: its `media` events in order, and where it starts. */
export function readEvents(url: string, headers: Record<string, string>) {
  const abort = new AbortController()
  const events: MediaEventBody[] = []
  let from: number | null = null
  let ended = false
  let status = 0
  const done = (async () => {
    try {
      const res = await fetch(url, { headers, signal: abort.signal })
      status = res.status
      if (!res.ok || !res.body) return
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
      let buffer = ''
      for (;;) {
        const { value, done } = await reader.read()
        if (done) return
        buffer += value
        let end = buffer.indexOf('\n\n')
        while (end >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          end = buffer.indexOf('\n\n')
          const event = /^event: (.*)$/m.exec(block)?.[1]
          const data = /^data: (.*)$/m.exec(block)?.[1]
          if (event === 'ready' && data) from = (JSON.parse(data) as { after: number }).after
          if (event === 'media' && data) events.push(JSON.parse(data) as MediaEventBody)
        }
      }
    } catch {
      // stopped, or the server went away
    } finally {
      ended = true
    }
  })()
  return {
    events,
    /** Where the stream starts (its `ready` event): every event it gives is past this id. */
    get from() {
      return from
    },
    get ended() {
      return ended
    },
    get status() {
      return status
    },
    async stop() {
      abort.abort()
      await done
    },
  }
}

/** A WebSocket on `/v1/ws` that keeps every message it gets, and how it closed. */
export function openSocket(url: string, init?: { headers?: Record<string, string> }) {
  const ws = new WebSocket(url, init as unknown as string[])
  const messages: Record<string, unknown>[] = []
  let closed: { code: number; reason: string } | null = null
  const opened = new Promise<void>((resolve, reject) => {
    ws.addEventListener('open', () => resolve())
    ws.addEventListener('error', () => reject(new Error(`the socket to ${url} failed`)))
  })
  ws.addEventListener('message', (event) => messages.push(JSON.parse(String(event.data)) as Record<string, unknown>))
  ws.addEventListener('close', (event) => (closed = { code: event.code, reason: event.reason }))
  return {
    ws,
    messages,
    opened,
    get closed() {
      return closed
    },
    send: (message: unknown) => ws.send(typeof message === 'string' ? message : JSON.stringify(message)),
    /** Messages of `type` so far. */
    of: (type: string) => messages.filter((m) => m.type === type),
    /** The events (`event` messages' bodies) so far. */
    events: () => messages.filter((m) => m.type === 'event').map((m) => m.event as MediaEventBody & { type: string }),
    close: () => ws.close(),
  }
}

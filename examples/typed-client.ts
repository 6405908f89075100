/**
 * A TypeScript backend using the media API through its typed client (`hc<AppType>`, services/api/client.ts):
 * upload a file, follow its processing as Server-Sent Events, and fetch what was made of it. Every path, parameter
 * and answer field below is checked by tsc against the API's own routes.
 *
 *   API_URL=http://localhost:3000 API_KEY=$(cat .data/dev-api-key) bun examples/typed-client.ts photo.jpg [out-dir]
 *
 * The events are read with fetch, not EventSource: EventSource cannot send the Authorization header.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { createClient, type Accepted, type Client, type Media } from '../services/api/client.ts'

/** An error answer of the API: its status, and the code and message of its body. */
export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string
  ) {
    super(`${status} ${code}: ${message}`)
    this.name = 'ApiFailure'
  }
}

/** A client that sends the API key with every request. */
export function connect(baseUrl: string, apiKey: string): Client {
  return createClient(baseUrl, { headers: { authorization: `Bearer ${apiKey}` } })
}

/** Uploads a file as the raw body (its name, percent-encoded, as X-Filename); resolves once it is stored and queued. */
export async function upload(api: Client, file: Blob, filename?: string): Promise<Accepted> {
  const res = await api.v1.media.$post(
    { query: {} },
    {
      headers: {
        'content-type': file.type || 'application/octet-stream',
        ...(filename ? { 'x-filename': encodeURIComponent(filename) } : {}),
      },
      init: { body: file },
    }
  )
  if (!res.ok) {
    const { error } = await res.json() // typed: our error body at every error status
    throw new ApiFailure(res.status, error.code, error.message)
  }
  return res.json() // typed: { id, jobId, kind, status: 'queued' }
}

/** The media as it is now. */
export async function getMedia(api: Client, id: string): Promise<Media> {
  const res = await api.v1.media[':id'].$get({ param: { id } })
  if (!res.ok) {
    const { error } = await res.json()
    throw new ApiFailure(res.status, error.code, error.message)
  }
  return res.json()
}

/**
 * The media's states as the API sends them: the current one first, then each change, ending after a final state
 * (or when the media is deleted). Abort `signal` to stop listening earlier.
 */
export async function* follow(api: Client, id: string, signal?: AbortSignal): AsyncGenerator<Media> {
  const res = await api.v1.media[':id'].events.$get({ param: { id } }, { init: { signal } })
  if (!res.ok || !res.body) throw await failure(res)
  for await (const message of readEvents(res.body)) {
    // An SSE stream is untyped to hc; the `state` event carries exactly what GET /v1/media/{id} answers.
    if (message.event === 'state') yield JSON.parse(message.data) as Media
    if (message.event === 'deleted') return
  }
}

/** Follows the media until it reaches a final state (completed, failed or cancelled) and returns it. */
export async function waitForFinal(api: Client, id: string, signal?: AbortSignal): Promise<Media> {
  let last: Media | undefined
  for await (const media of follow(api, id, signal)) last = media
  if (!last || !['completed', 'failed', 'cancelled'].includes(last.status))
    throw new Error(`the events of media ${id} ended before a final state`)
  return last
}

/** The bytes of one output of a media, with their content type. */
export async function fetchOutput(
  api: Client,
  id: string,
  name: string
): Promise<{ contentType: string; bytes: Uint8Array }> {
  const res = await api.v1.media[':id'].outputs[':name'].$get({ param: { id, name } })
  if (!res.ok) throw await failure(res)
  return {
    contentType: res.headers.get('content-type') ?? 'application/octet-stream',
    bytes: new Uint8Array(await res.arrayBuffer()),
  }
}

/** One Server-Sent Event (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation). */
export interface ServerSentEvent {
  event: string
  data: string
  id?: string
}

/** Reads an event stream: `field: value` lines, a blank line ends an event, lines starting with ":" are comments. */
export async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<ServerSentEvent> {
  let buffer = ''
  let event = ''
  let data: string[] = []
  let id: string | undefined
  const reader = body.getReader()
  const decoder = new TextDecoder()
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += decoder.decode(value, { stream: true })
    const lines = buffer.split(/\r\n|\n|\r/)
    buffer = lines.pop() ?? '' // the last line may be incomplete: keep it for the next chunk
    for (const line of lines) {
      if (line === '') {
        if (data.length) yield { event: event || 'message', data: data.join('\n'), ...(id === undefined ? {} : { id }) }
        event = ''
        data = []
        continue
      }
      if (line.startsWith(':')) continue
      const colon = line.indexOf(':')
      const field = colon < 0 ? line : line.slice(0, colon)
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
      if (field === 'event') event = value
      else if (field === 'data') data.push(value)
      else if (field === 'id') id = value
    }
  }
}

/** An error answer whose body may not be JSON (a stream route): our error body when it is one, else the status. */
async function failure(res: { status: number; text(): Promise<string> }): Promise<ApiFailure> {
  const text = await res.text()
  try {
    const { error } = JSON.parse(text) as { error: { code: string; message: string } }
    return new ApiFailure(res.status, error.code, error.message)
  } catch {
    return new ApiFailure(res.status, 'unexpected', text.slice(0, 200))
  }
}

const EXTENSIONS: Record<string, string> = {
  'image/webp': 'webp',
  'image/jpeg': 'jpg',
  'image/png': 'png',
  'image/avif': 'avif',
  'video/mp4': 'mp4',
}

if (import.meta.main) {
  const [path, outDir = '.'] = process.argv.slice(2)
  const apiKey = process.env.API_KEY
  if (!path || !apiKey) {
    console.error('usage: API_KEY=<key> [API_URL=http://localhost:3000] bun examples/typed-client.ts <file> [out-dir]')
    process.exit(2)
  }
  const api = connect(process.env.API_URL ?? 'http://localhost:3000', apiKey)
  const accepted = await upload(api, Bun.file(path), basename(path))
  console.log(`uploaded ${path}: media ${accepted.id} (${accepted.kind}), ${accepted.status}`)
  let media: Media | undefined
  for await (const state of follow(api, accepted.id)) {
    console.log(
      `  ${state.status} ${state.stage} ${state.progress}%${state.etaSeconds ? `, about ${state.etaSeconds} s left` : ''}`
    )
    media = state
  }
  if (media?.status !== 'completed') {
    console.error(
      `media ${accepted.id} ended ${media?.status ?? 'without a state'}${media?.error ? `: ${media.error.code}: ${media.error.message}` : ''}`
    )
    process.exit(1)
  }
  mkdirSync(outDir, { recursive: true })
  for (const output of media.outputs) {
    const { contentType, bytes } = await fetchOutput(api, media.id, output.name)
    const file = join(outDir, `${media.id}-${output.name}.${EXTENSIONS[contentType] ?? 'bin'}`)
    writeFileSync(file, bytes)
    console.log(`  ${output.name}: ${output.width}×${output.height}, ${bytes.byteLength} bytes → ${file}`)
  }
}

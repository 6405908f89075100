/**
 * Uploading a file: resumably over tus (`tus-js-client`, `/v1/uploads`) where the API's store can resume uploads; a
 * dropped connection is retried from where the server says it stopped, and an upload of the same file cut off by a
 * closed tab resumes when the file is dropped again. On a store without ListParts the API answers tus with 501: there
 * the file is streamed in one POST /v1/media, with progress, and a dropped connection starts over.
 */
import * as tus from 'tus-js-client'
import { Problem, problemOf, send } from './api.ts'
import { keyHeaders, session } from './session.ts'

/** Each PATCH carries at most this much: under the body caps of proxies (Cloudflare's is 100 MB). */
const CHUNK_BYTES = 16 * 1024 * 1024
/** Waits between retries of a broken request; tus starts counting again after each chunk that gets through. */
const RETRY_DELAYS = [0, 1_000, 3_000, 5_000, 10_000, 20_000]

export interface UploadEvents {
  /** Bytes sent so far, of `total`. */
  onProgress(sent: number, total: number): void
  /** Stored and queued: the media it became. */
  onAccepted(mediaId: string): void
  onFailed(problem: Problem): void
}

export interface Upload {
  /** `resumable`: over tus; otherwise one POST. */
  readonly resumable: boolean
  abort(): void
}

let probe: Promise<boolean> | undefined
/** Whether the API takes tus uploads here: asked once (OPTIONS, tus's discovery, needs no key). */
export function resumableHere(): Promise<boolean> {
  probe ??= send('/v1/uploads', { method: 'OPTIONS' }).then(
    (res) => res.status !== 501,
    () => {
      probe = undefined
      return true
    }
  )
  return probe
}

/** `presets`: the presets to make (null: the tenant's defaults). */
export async function startUpload(file: File, events: UploadEvents, presets: string[] | null = null): Promise<Upload> {
  return (await resumableHere()) ? overTus(file, events, presets) : inOnePost(file, events, presets)
}

function overTus(file: File, events: UploadEvents, presets: string[] | null): Upload {
  const upload = new tus.Upload(file, {
    endpoint: `${location.origin}/v1/uploads`,
    headers: keyHeaders(),
    metadata: { filename: file.name, filetype: file.type, ...(presets ? { presets: presets.join(',') } : {}) },
    chunkSize: CHUNK_BYTES,
    retryDelays: RETRY_DELAYS,
    // The same file under another key is another upload (the server would refuse the other tenant's URL anyway).
    fingerprint: async (f) => ['media-console', await keyTag(), f.name, f.type, f.size, f.lastModified].join('/'),
    removeFingerprintOnSuccess: true,
    onProgress: (sent, total) => events.onProgress(sent, total),
    onSuccess({ lastResponse }) {
      const id = lastResponse.getHeader('X-Media-Id') ?? upload.url?.split('/').pop()
      if (id) events.onAccepted(id)
      else
        events.onFailed(new Problem(0, 'no_media', 'the upload finished but the API did not say which media it became'))
    },
    async onError(error) {
      const res = (error as tus.DetailedError).originalResponse
      events.onFailed(res ? await problemOfTus(res) : new Problem(0, 'network', error.message))
    },
  })
  let aborted = false
  void upload
    .findPreviousUploads()
    .then(
      (previous) => previous[0] && upload.resumeFromPreviousUpload(previous[0]),
      () => {}
    )
    .then(() => aborted || upload.start())
  return {
    resumable: true,
    abort() {
      aborted = true
      // `true`: the server is told to drop what it has (tus termination).
      void upload.abort(true).catch(() => {})
    },
  }
}

/** A tus answer as a Problem, read as any other answer of the API (a refused key signs the console out). */
const problemOfTus = (res: tus.HttpResponse): Promise<Problem> =>
  problemOf({ status: res.getStatus(), json: async () => JSON.parse(res.getBody()) })

/** One POST of the whole file, with upload progress (XMLHttpRequest: fetch reports none). */
function inOnePost(file: File, events: UploadEvents, presets: string[] | null): Upload {
  const xhr = new XMLHttpRequest()
  xhr.open('POST', presets ? `/v1/media?presets=${encodeURIComponent(presets.join(','))}` : '/v1/media')
  for (const [name, value] of Object.entries(keyHeaders())) xhr.setRequestHeader(name, value)
  xhr.setRequestHeader('content-type', 'application/octet-stream')
  xhr.setRequestHeader('x-filename', encodeURIComponent(file.name))
  xhr.upload.onprogress = (event) => events.onProgress(event.loaded, event.lengthComputable ? event.total : file.size)
  xhr.onload = async () => {
    const res = new Response(xhr.responseText, { status: xhr.status })
    if (xhr.status === 202) events.onAccepted(((await res.json()) as { id: string }).id)
    else events.onFailed(await problemOf(res))
  }
  xhr.onerror = () =>
    events.onFailed(new Problem(0, 'network', 'the connection broke off during the upload; try again'))
  xhr.send(file)
  return { resumable: false, abort: () => xhr.abort() }
}

/** A short tag of the API key: which key an unfinished upload was begun with, without keeping the key itself. */
async function keyTag(): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(session.key() ?? ''))
  return Array.from(new Uint8Array(digest).slice(0, 6), (b) => b.toString(16).padStart(2, '0')).join('')
}

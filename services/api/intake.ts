/**
 * Receiving an upload as a stream: the raw body, or the `file` field of multipart/form-data (parsed by busboy,
 * which streams each part). The first bytes decide the kind; the rest flows to storage through a byte limit, so
 * the API never holds more than a few S3 parts of a file in memory.
 */
import busboy from 'busboy'
import { Readable } from 'node:stream'
import { ApiError } from './errors.ts'
import { SNIFF_BYTES, sniff, type Sniffed } from './sniff.ts'

export type Accepted = Extract<Sniffed, { kind: 'image' | 'video' }>
export interface Received {
  sniffed: Accepted
  size: number
}
/** Stores the accepted stream; called once the kind is known. */
export type Sink = (sniffed: Accepted, body: ReadableStream<Uint8Array>) => Promise<void>

/**
 * After refusing an upload, read and discard up to this much of the rest so the client (still sending) can read
 * the error answer instead of seeing its connection reset; past it the connection is cut.
 */
const DRAIN_LIMIT = 16 * 1024 * 1024

async function drain(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
  let drained = 0
  try {
    while (drained < DRAIN_LIMIT) {
      const { value, done } = await reader.read()
      if (done) return
      drained += value.byteLength
    }
  } catch {
    return // the client went away
  }
  await reader.cancel().catch(() => {})
}

const tooLarge = (max: number) => new ApiError(413, 'payload_too_large', `the upload is larger than the limit of ${max} bytes`)

/** Takes the request's upload (raw or multipart) and hands it to `sink`. */
export function receiveUpload(request: Request, maxBytes: number, sink: Sink, kinds: readonly Accepted['kind'][] = ['image', 'video']): Promise<Received> {
  const type = request.headers.get('content-type') ?? ''
  if (!request.body) throw new ApiError(400, 'empty_body', 'the request has no body; send the file as the body or as the multipart field "file"')
  if (/^multipart\/form-data/i.test(type)) return receiveMultipart(request.body, type, maxBytes, sink, kinds)
  return receiveStream(request.body, maxBytes, sink, kinds)
}

/** Sniffs the head of `body`, then streams all of it to `sink`, failing with 413 past `maxBytes`. */
export async function receiveStream(
  body: ReadableStream<Uint8Array>,
  maxBytes: number,
  sink: Sink,
  kinds: readonly Accepted['kind'][] = ['image', 'video']
): Promise<Received> {
  const reader = body.getReader()
  const chunks: Uint8Array[] = []
  let total = 0
  while (total < SNIFF_BYTES) {
    const { value, done } = await reader.read()
    if (done) break
    chunks.push(value)
    total += value.byteLength
  }
  if (total === 0) throw new ApiError(400, 'empty_body', 'the upload is empty')
  if (total > maxBytes) {
    await drain(reader)
    throw tooLarge(maxBytes)
  }
  const head = concat(chunks)
  const sniffed = sniff(head)
  if (!sniffed || sniffed.kind === 'audio' || !kinds.includes(sniffed.kind)) {
    await drain(reader)
    const what = !sniffed
      ? 'not an image or video format this service accepts'
      : sniffed.kind === 'audio'
        ? `an audio file (${sniffed.format}); audio-only uploads are not supported`
        : `a ${sniffed.kind} (${sniffed.format}); this service accepts only ${kinds.join(' and ')} uploads for now`
    throw new ApiError(415, 'unsupported_media_type', `the file is ${what} (judged from its content, not its name or declared type)`)
  }
  let overLimit = false
  const limited = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(head)
    },
    async pull(controller) {
      const { value, done } = await reader.read()
      if (done) return controller.close()
      total += value.byteLength
      if (total > maxBytes) {
        overLimit = true
        controller.error(tooLarge(maxBytes))
        return drain(reader)
      }
      controller.enqueue(value)
    },
    cancel: (reason) => reader.cancel(reason),
  })
  try {
    await sink(sniffed, limited)
  } catch (error) {
    if (overLimit) throw tooLarge(maxBytes)
    throw error
  }
  return { sniffed, size: total }
}

function receiveMultipart(
  body: ReadableStream<Uint8Array>,
  contentType: string,
  maxBytes: number,
  sink: Sink,
  kinds: readonly Accepted['kind'][]
): Promise<Received> {
  return new Promise<Received>((resolve, reject) => {
    let parser: busboy.Busboy
    try {
      parser = busboy({
        headers: { 'content-type': contentType },
        limits: { files: 1, fileSize: maxBytes + 1, fields: 32, fieldSize: 64 * 1024, parts: 64 },
      })
    } catch (error) {
      return reject(new ApiError(400, 'bad_multipart', `the multipart body cannot be parsed: ${(error as Error).message}`))
    }
    let received: Promise<Received> | undefined
    parser.on('file', (name, file) => {
      if (name !== 'file' || received) return void file.resume()
      received = receiveStream(Readable.toWeb(file) as unknown as ReadableStream<Uint8Array>, maxBytes, sink, kinds)
      received.then(resolve, reject)
    })
    parser.on('error', (error) => reject(new ApiError(400, 'bad_multipart', `the multipart body is malformed: ${(error as Error).message}`)))
    parser.on('close', () => {
      if (!received) reject(new ApiError(400, 'empty_body', 'the multipart body has no field named "file"'))
    })
    const source = Readable.fromWeb(body as unknown as import('node:stream/web').ReadableStream<Uint8Array>)
    source.on('error', (error) => reject(new ApiError(400, 'bad_request', `the upload was interrupted: ${error.message}`)))
    source.pipe(parser)
  })
}

function concat(chunks: Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0]!
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0))
  let at = 0
  for (const chunk of chunks) {
    out.set(chunk, at)
    at += chunk.byteLength
  }
  return out
}

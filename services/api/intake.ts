/**
 * Receiving an upload as a stream: the raw body, or the `file` field of multipart/form-data (parsed by busboy,
 * which streams each part). The first bytes decide the kind; what comes back is the whole upload as a byte-limited
 * stream for the caller to store, so the API never holds more than a few S3 parts of a file in memory.
 */
import busboy from 'busboy'
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { ApiError } from './errors.ts'
import { declaredFilename, sanitizeFilename } from './filename.ts'
import { paced, type PaceRule } from './pace.ts'
import { SNIFF_BYTES, sniff, type Sniffed } from './sniff.ts'

export type Accepted = Extract<Sniffed, { kind: 'image' | 'video' }>
type Kinds = readonly Accepted['kind'][]

/** An upload whose kind is known, not yet read past its head. */
export interface Received {
  sniffed: Accepted
  /** The name the client gave the file, sanitised; metadata only. */
  filename: string | null
  /**
   * The whole upload, head included, to be read once. It errors with the 413 past the limit, and with a 400 when
   * the client breaks off or the multipart framing breaks.
   */
  body: ReadableStream<Uint8Array>
  /** The bytes read from `body` so far: the upload's size once it has been read to its end. */
  readonly size: number
  /**
   * Why `body` errored (the 413 or 400 above), or null. Whoever reads the body may report its error in words of its
   * own (lib-storage's Upload can), so this is how a reader tells the upload's fault from its own.
   */
  readonly failure: ApiError | null
  /** The SHA-256 (hex) of the file's bytes, once `body` has been read to its end; null before. */
  readonly sha256: string | null
}

/** Multipart framing (boundaries, part headers) on top of the file itself. */
const MULTIPART_SLACK = 64 * 1024
/**
 * After refusing an upload, read and discard up to this much of the rest so the client (still sending) can read
 * the error answer instead of seeing its connection reset; past it the connection is cut.
 */
const DRAIN_LIMIT = 16 * 1024 * 1024

export const tooLarge = (max: number) => new ApiError(413, 'payload_too_large', `the upload is larger than the limit of ${max} bytes`)
const empty = (why: string) => new ApiError(400, 'empty_body', why)
/** A read of the upload failed: the client went away (or an ApiError of the multipart parser, kept as it is). */
const interrupted = (error: unknown) =>
  error instanceof ApiError ? error : new ApiError(400, 'bad_request', `the upload was interrupted: ${(error as Error)?.message ?? String(error)}`)

export interface UploadRules {
  maxBytes: number
  kinds?: Kinds
  /** How slow a client may be before the upload is cut (408). */
  pace: PaceRule
}

/**
 * Takes the request's upload (raw or multipart): refuses at once what its declared length already rules out, then
 * resolves once the head is sniffed. Refusals (400, 408, 413, 415) reject; the body is drained first where it is read.
 */
export async function receiveUpload(request: Request, rules: UploadRules): Promise<Received> {
  const { maxBytes, kinds = ['image', 'video'] } = rules
  const declared = Number(request.headers.get('content-length') ?? NaN)
  if (declared === 0) throw empty('the upload is empty')
  if (declared > maxBytes + MULTIPART_SLACK) throw tooLarge(maxBytes)
  if (!request.body) throw empty('the request has no body; send the file as the body or as the multipart field "file"')
  const body = paced(request.body, rules.pace)
  const type = request.headers.get('content-type') ?? ''
  if (/^multipart\/form-data/i.test(type)) return receiveMultipart(body, type, maxBytes, kinds, declaredFilename(request.headers))
  return receiveStream(body, maxBytes, kinds, declaredFilename(request.headers))
}

/** Sniffs the head of `body` and hands back all of it behind a byte limit of `maxBytes`. */
export async function receiveStream(
  body: ReadableStream<Uint8Array>,
  maxBytes: number,
  kinds: Kinds = ['image', 'video'],
  filename: string | null = null
): Promise<Received> {
  const reader = body.getReader()
  const chunks: Uint8Array[] = []
  let total = 0
  while (total < SNIFF_BYTES) {
    const { value, done } = await reader.read().catch((error: unknown) => Promise.reject(interrupted(error)))
    if (done) break
    chunks.push(value)
    total += value.byteLength
  }
  if (total === 0) throw empty('the upload is empty')
  if (total > maxBytes) {
    await drain(reader)
    throw tooLarge(maxBytes)
  }
  const head = concat(chunks)
  let sniffed: Accepted
  try {
    sniffed = judgeHead(head, kinds)
  } catch (error) {
    await drain(reader)
    throw error
  }
  return limited(sniffed, filename, head, reader, maxBytes)
}

/**
 * What an upload is, from its first bytes (SNIFF_BYTES of them, or all of a shorter file): an accepted image or
 * video, or the 415 that refuses it. Every way of uploading asks this.
 */
export function judgeHead(head: Uint8Array, kinds: Kinds = ['image', 'video']): Accepted {
  const sniffed = sniff(head)
  const refusal = refusalOf(sniffed, kinds)
  if (refusal !== null || !sniffed) {
    throw new ApiError(415, 'unsupported_media_type', `the file is ${refusal} (judged from its content, not its name or declared type)`)
  }
  return sniffed as Accepted
}

/** The head, then the rest of `reader` as it is pulled, failing (413) past `maxBytes`; it counts what it passes on. */
function limited(sniffed: Accepted, filename: string | null, head: Uint8Array, reader: ReadableStreamDefaultReader<Uint8Array>, maxBytes: number): Received {
  let size = head.byteLength
  let failure: ApiError | null = null
  // Hashed as it passes: what an Idempotency-Key's retry is compared by, at no second read of the first request.
  const hash = createHash('sha256').update(head)
  let sha256: string | null = null
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(head)
    },
    async pull(controller) {
      let chunk: Awaited<ReturnType<typeof reader.read>>
      try {
        chunk = await reader.read()
      } catch (error) {
        failure = interrupted(error)
        return controller.error(failure)
      }
      if (chunk.done) {
        sha256 = hash.digest('hex')
        return controller.close()
      }
      size += chunk.value.byteLength
      if (size > maxBytes) {
        failure = tooLarge(maxBytes)
        controller.error(failure)
        return drain(reader)
      }
      hash.update(chunk.value)
      controller.enqueue(chunk.value)
    },
    cancel: (reason) => reader.cancel(reason),
  })
  return {
    sniffed,
    filename,
    body,
    get size() {
      return size
    },
    get failure() {
      return failure
    },
    get sha256() {
      return sha256
    },
  }
}

/**
 * The allow-list: what the processors decode. BMP is recognised (to say what it is) but refused: sharp's libvips
 * has no BMP loader.
 */
export const ACCEPTED_FORMATS: Record<Accepted['kind'], readonly string[]> = {
  image: ['jpeg', 'png', 'gif', 'webp', 'tiff', 'heic', 'avif'],
  video: ['mp4', 'mov', '3gp', 'webm', 'mkv', 'avi', 'mpegts', 'flv'],
}

/** Why a sniffed file is refused, or null when it is accepted. */
function refusalOf(sniffed: Sniffed | null, kinds: Kinds): string | null {
  if (!sniffed) return 'not an image or video format this service accepts'
  if (sniffed.kind === 'audio') return `an audio file (${sniffed.format}); audio-only uploads are not supported`
  // An SVG is a document, not pixels: it can reference other files and URLs, and rendering it runs an XML parser
  // and a renderer on untrusted input. Refused; upload it rasterised (PNG) instead.
  if (sniffed.format === 'svg') return 'an SVG image; SVG is refused because it can reference other files and URLs (upload a PNG instead)'
  if (!kinds.includes(sniffed.kind)) return `a ${sniffed.kind} (${sniffed.format}); this service accepts only ${kinds.join(' and ')} uploads for now`
  if (!ACCEPTED_FORMATS[sniffed.kind].includes(sniffed.format)) return `a ${sniffed.format.toUpperCase()} ${sniffed.kind}, a format the processors cannot decode`
  return null
}

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

function receiveMultipart(
  body: ReadableStream<Uint8Array>,
  contentType: string,
  maxBytes: number,
  kinds: Kinds,
  declared: string | null
): Promise<Received> {
  return new Promise<Received>((resolve, reject) => {
    let parser: busboy.Busboy
    try {
      parser = busboy({
        headers: { 'content-type': contentType },
        // Browsers send a part's file name as raw UTF-8.
        defParamCharset: 'utf8',
        limits: { files: 1, fileSize: maxBytes + 1, fields: 32, fieldSize: 64 * 1024, parts: 64 },
      })
    } catch (error) {
      return reject(new ApiError(400, 'bad_multipart', `the multipart body cannot be parsed: ${(error as Error).message}`))
    }
    let file: Readable | undefined
    /** Before the file is sniffed the promise rejects; after, the file's stream errors, and with it `body`. */
    const fail = (error: ApiError) => {
      reject(error)
      file?.destroy(error)
    }
    parser.on('file', (name, stream, info) => {
      if (name !== 'file' || file) return void stream.resume()
      file = stream
      const filename = sanitizeFilename(info.filename) ?? declared
      receiveStream(Readable.toWeb(stream) as unknown as ReadableStream<Uint8Array>, maxBytes, kinds, filename).then(resolve, reject)
    })
    parser.on('error', (error) => fail(new ApiError(400, 'bad_multipart', `the multipart body is malformed: ${(error as Error).message}`)))
    parser.on('close', () => {
      if (!file) reject(empty('the multipart body has no field named "file"'))
    })
    const source = Readable.fromWeb(body as unknown as import('node:stream/web').ReadableStream<Uint8Array>)
    source.on('error', (error) => fail(interrupted(error)))
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

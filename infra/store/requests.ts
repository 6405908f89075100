/**
 * What the calls read from a request (metadata, small XML bodies, conditions, ranges, parameters), and the context
 * they share.
 */
import { ftruncateSync, openSync } from 'node:fs'
import type { Multipart } from './multipart.ts'
import { STORED_HEADERS, type Layout, type ObjectInfo, type ReadPins } from './objects.ts'
import { UNSIGNED } from './sigv4.ts'
import { errors, S3Error } from './xml.ts'

/** What every call works with: the files, the pins of GETs in flight, the multipart uploads, and where it answers. */
export interface StoreContext {
  layout: Layout
  pins: ReadPins
  multipart: Multipart
  /** The store's origin (`http://127.0.0.1:<port>`), for the Location of a completed upload. */
  origin(): string
}

/** What a bucket name may be (S3's rules for new buckets, without the IP-address form). */
export const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/

export const OWNER = '<Owner><ID>local</ID><DisplayName>local</DisplayName></Owner>'

/** An object's metadata from a PUT's (or CreateMultipartUpload's, or a REPLACE copy's) headers. */
export function describe(request: Request, etag: string): ObjectInfo {
  const metadata: Record<string, string> = {}
  const headers: Record<string, string> = {}
  request.headers.forEach((value, name) => {
    if (name.startsWith('x-amz-meta-')) metadata[name.slice(11)] = value
    else if (STORED_HEADERS.includes(name)) headers[name] = value
  })
  return {
    etag,
    size: 0,
    lastModified: 0,
    contentType: request.headers.get('content-type') || 'binary/octet-stream',
    metadata,
    headers,
  }
}

/** A small body read whole (XML of Complete or DeleteObjects), checked against its signed hash and Content-MD5. */
export async function readSmallBody(request: Request, payloadHash: string, limit: number): Promise<string> {
  const bytes = new Uint8Array(await request.arrayBuffer())
  if (bytes.byteLength > limit) throw errors.malformedXml(`the body is larger than ${limit} bytes`)
  if (payloadHash !== UNSIGNED) {
    const computed = new Bun.CryptoHasher('sha256').update(bytes).digest('hex')
    if (computed !== payloadHash)
      throw new S3Error(
        'XAmzContentSHA256Mismatch',
        400,
        "The provided 'x-amz-content-sha256' header does not match what was computed."
      )
  }
  const md5 = request.headers.get('content-md5')
  if (md5 !== null && new Bun.CryptoHasher('md5').update(bytes).digest('base64') !== md5)
    throw new S3Error('BadDigest', 400, 'The Content-MD5 you specified did not match what we received.')
  return new TextDecoder().decode(bytes)
}

/** 304 or 412 when a conditional header says so, else undefined. */
export function precondition(request: Request, info: ObjectInfo): 304 | 412 | undefined {
  const etag = `"${info.etag}"`
  const matches = (header: string) => header.split(',').some((tag) => tag.trim() === '*' || tag.trim() === etag)
  const ifMatch = request.headers.get('if-match')
  if (ifMatch !== null && !matches(ifMatch)) return 412
  const modified = Math.floor(info.lastModified / 1000) * 1000
  const ifUnmodified = Date.parse(request.headers.get('if-unmodified-since') ?? '')
  if (ifMatch === null && !Number.isNaN(ifUnmodified) && modified > ifUnmodified) return 412
  const ifNoneMatch = request.headers.get('if-none-match')
  if (ifNoneMatch !== null) return matches(ifNoneMatch) ? 304 : undefined
  const ifModified = Date.parse(request.headers.get('if-modified-since') ?? '')
  if (!Number.isNaN(ifModified) && modified <= ifModified) return 304
  return undefined
}

/** A single `bytes=a-b`, `a-` or `-n` range, clamped to the object; none for no (or an unreadable) Range. */
export function parseRange(header: string | null, size: number): [number, number] | 'unsatisfiable' | undefined {
  if (header === null) return undefined
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (!m || (m[1] === '' && m[2] === '')) return undefined
  if (m[1] === '') {
    const suffix = Number(m[2])
    if (suffix === 0 || size === 0) return 'unsatisfiable'
    return [Math.max(0, size - suffix), size - 1]
  }
  const first = Number(m[1])
  const last = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
  if (m[2] !== '' && Number(m[2]) < first) return undefined
  if (first >= size) return 'unsatisfiable'
  return [first, last]
}

export function numberParam(params: URLSearchParams, name: string, fallback: number): number {
  const text = params.get(name)
  if (text === null) return fallback
  if (!/^[0-9]{1,10}$/.test(text))
    throw errors.invalidArgument(`Provided ${name} not an integer or within integer range`, name, text)
  return Number(text)
}

export function decode(text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    throw new S3Error('InvalidURI', 400, `Could not parse the specified URI: ${text.slice(0, 200)}`)
  }
}

/** Opens a copied object to replace its trailer: cut after the bytes. */
export function openObjectForAppend(path: string, size: number): number {
  const fd = openSync(path, 'r+')
  ftruncateSync(fd, size)
  return fd
}

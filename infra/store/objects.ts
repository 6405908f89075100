/**
 * The store's files. Under the root directory:
 * - `<bucket>/…` the objects, one file each: the bytes, then a trailer holding the object's metadata as JSON, its
 *   length (u32 LE) and a magic (`S3O1`). Bytes and metadata travel together through one atomic rename, so a reader
 *   sees the old or the new object, never a mix, also after a crash mid-write. A GET reads the trailer, then has Bun
 *   send the bytes from the same path, which stays pinned meanwhile (ReadPins), so a replacement during the answer
 *   does not mix two objects either.
 * - `.store/tmp/` files being written (renamed into place when whole; emptied at start).
 * - `.store/uploads/<bucket>/<uploadId>/` multipart uploads in progress (see multipart.ts).
 *
 * A key maps to a path segment by segment (split at `/`): each segment is percent-encoded so that only
 * `A-Z a-z 0-9 _ . -` stay as they are (a leading `.` is encoded too, so `.` and `..` are plain names; an empty
 * segment is `%`), and an object's file name ends in `@`, which no encoded segment contains: `a` (file `a@`) and
 * `a/b` (directory `a`, file `b@`) are both storable, and no key can leave its bucket's directory.
 */
import { closeSync, fstatSync, mkdirSync, openSync, readSync, renameSync, rmdirSync, unlinkSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { S3Error } from './xml.ts'

/** What the store keeps beside an object's bytes. */
export interface ObjectInfo {
  /**
   * The ETag without its quotes: 128 random bits drawn at each write, not the MD5 of the bytes. MD5 costs 5 ms of CPU
   * per 4 MiB here (Bun.CryptoHasher on this project's 2-core machine), half of what the store spends on a 12 MP
   * photo job in all; S3 calls ETags opaque. Kept with the object, so PUT, HEAD, GET and listings agree; new at every
   * write (even of the same bytes); a copy keeps its source's. A multipart object's is `<MD5 of its parts' ETags>-N`.
   */
  etag: string
  size: number
  /** Milliseconds since the epoch. */
  lastModified: number
  contentType: string
  /** x-amz-meta-* without the prefix, names lowercased. */
  metadata: Record<string, string>
  /** Content-Disposition, Cache-Control, Content-Encoding, Content-Language, Expires, as set (lowercase names). */
  headers: Record<string, string>
}

/** The standard headers an object keeps when they are set on PUT (or CreateMultipartUpload, or a REPLACE copy). */
export const STORED_HEADERS = [
  'cache-control',
  'content-disposition',
  'content-encoding',
  'content-language',
  'expires',
]

const MAGIC = 0x314f3353 // "S3O1" little-endian
const FOOTER = 8
const MAX_KEY_BYTES = 1024
const MAX_NAME_BYTES = 255
export const OBJECT_SUFFIX = '@'

export class Layout {
  readonly tmp: string
  constructor(readonly root: string) {
    this.tmp = join(root, '.store', 'tmp')
  }
  bucket(bucket: string): string {
    return join(this.root, bucket)
  }
  uploads(bucket: string): string {
    return join(this.root, '.store', 'uploads', bucket)
  }
  object(bucket: string, key: string): string {
    return join(this.root, bucket, keyPath(key))
  }
  /** A fresh name for a file being written. */
  temp(): string {
    return join(this.tmp, crypto.randomUUID())
  }
}

/** The path of a key inside its bucket's directory; KeyTooLongError where the file system cannot hold it. */
export function keyPath(key: string): string {
  if (Buffer.byteLength(key) > MAX_KEY_BYTES)
    throw new S3Error('KeyTooLongError', 400, `Your key is too long (at most ${MAX_KEY_BYTES} bytes).`, { Key: key })
  const segments = key.split('/').map(encodeSegment)
  segments[segments.length - 1] += OBJECT_SUFFIX
  for (const name of segments)
    if (name.length > MAX_NAME_BYTES)
      throw new S3Error(
        'KeyTooLongError',
        400,
        `A part of the key between slashes is too long for this store: ${name.length} bytes once encoded for a file name, at most ${MAX_NAME_BYTES}.`,
        { Key: key }
      )
  return segments.join('/')
}

export function encodeSegment(segment: string): string {
  if (segment === '') return '%'
  const encoded = encodeURIComponent(segment).replace(
    /[!~*'()]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`
  )
  return encoded.startsWith('.') ? `%2E${encoded.slice(1)}` : encoded
}

/** The key segment a file or directory name stands for, or undefined for a name the store did not make. */
export function decodeSegment(name: string): string | undefined {
  if (name === '%') return ''
  if (!/^[A-Za-z0-9_-]|^%[0-9A-F]{2}/.test(name) || /[^A-Za-z0-9_.%-]/.test(name)) return undefined
  try {
    return decodeURIComponent(name)
  } catch {
    return undefined
  }
}

/** The trailer that follows an object's bytes. */
export function trailer(info: ObjectInfo): Uint8Array {
  const json = Buffer.from(JSON.stringify(info))
  const out = Buffer.allocUnsafe(json.length + FOOTER)
  json.copy(out, 0)
  out.writeUInt32LE(json.length, json.length)
  out.writeUInt32LE(MAGIC, json.length + 4)
  return out
}

/** An object opened for reading: its descriptor (the caller closes it) and what its trailer says. */
export interface OpenObject {
  fd: number
  info: ObjectInfo
}

/** Opens the object at `path`, or undefined when there is none (or the file is not a whole object). */
export function openObject(path: string): OpenObject | undefined {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (error) {
    if (isMissing(error)) return undefined
    throw error
  }
  try {
    const info = readTrailer(fd)
    if (info) return { fd, info }
  } catch (error) {
    closeSync(fd)
    throw error
  }
  closeSync(fd)
  return undefined
}

/** The object's metadata alone. */
export function statObject(path: string): ObjectInfo | undefined {
  const opened = openObject(path)
  if (opened) closeSync(opened.fd)
  return opened?.info
}

function readTrailer(fd: number): ObjectInfo | undefined {
  const { size: fileSize } = fstatSync(fd)
  if (fileSize < FOOTER) return undefined
  const tail = Math.min(fileSize, 4096)
  let buffer = Buffer.allocUnsafe(tail)
  if (readSync(fd, buffer, 0, tail, fileSize - tail) !== tail) return undefined
  if (buffer.readUInt32LE(tail - 4) !== MAGIC) return undefined
  const length = buffer.readUInt32LE(tail - 8)
  if (length + FOOTER > fileSize) return undefined
  if (length + FOOTER > tail) {
    buffer = Buffer.allocUnsafe(length + FOOTER)
    readSync(fd, buffer, 0, length + FOOTER, fileSize - length - FOOTER)
  }
  const end = buffer.length - FOOTER
  const info = JSON.parse(buffer.toString('utf8', end - length, end)) as ObjectInfo
  return info.size + length + FOOTER === fileSize ? info : undefined
}

/**
 * Paths a GET answer is about to read. A GET reads the trailer, then answers `Bun.file(path).slice(…)`, which Bun
 * opens after the handler returns and its microtasks have run, before the next timer (Bun 1.4.5; the concurrent
 * overwrite test in tests/s3-conformance.test.ts holds it to that). Replacing or removing a pinned path waits for
 * the pin to lapse, so the file Bun opens is the one whose trailer was read: old or new, never a mix. Every
 * rename and unlink of an object is synchronous, right after that wait.
 */
export class ReadPins {
  private readonly pins = new Map<string, number>()
  private readonly writers = new Map<string, number>()

  /** Before a GET reads `path`: waits while a replacement of it waits (writers go first), then pins it. */
  async pin(path: string): Promise<void> {
    while (this.writers.has(path)) await lapse()
    this.pins.set(path, (this.pins.get(path) ?? 0) + 1)
    setTimeout(() => {
      const left = (this.pins.get(path) ?? 1) - 1
      if (left > 0) this.pins.set(path, left)
      else this.pins.delete(path)
    }, PIN_MS)
  }

  /** Runs `change` (synchronous: a rename or an unlink of `path`) once no GET answer is about to open `path`. */
  async replace<T>(path: string, change: () => T): Promise<T> {
    this.writers.set(path, (this.writers.get(path) ?? 0) + 1)
    try {
      while (this.pins.has(path)) await lapse()
      return change()
    } finally {
      const left = (this.writers.get(path) ?? 1) - 1
      if (left > 0) this.writers.set(path, left)
      else this.writers.delete(path)
    }
  }
}

const lapse = () => new Promise((resolve) => setTimeout(resolve, PIN_MS))
const PIN_MS = 5

/**
 * Puts a finished temporary file in its place (atomically replacing what was there), making the directories on
 * the way; a concurrent delete that removed an emptied directory meanwhile is retried.
 */
export async function commit(temp: string, path: string, pins: ReadPins): Promise<void> {
  await pins.replace(path, () => {
    for (let attempt = 0; ; attempt++) {
      try {
        renameSync(temp, path)
        return
      } catch (error) {
        if (!isMissing(error) || attempt >= 3) throw error
        mkdirSync(dirname(path), { recursive: true })
      }
    }
  })
}

/** Removes an object's file and the directories it leaves empty (up to the bucket's); false when there was none. */
export async function removeObject(bucketDir: string, path: string, pins: ReadPins): Promise<boolean> {
  const removed = await pins.replace(path, () => {
    try {
      unlinkSync(path)
      return true
    } catch (error) {
      if (isMissing(error)) return false
      throw error
    }
  })
  if (!removed) return false
  for (let dir = dirname(path); dir.length > bucketDir.length && dir.startsWith(bucketDir); dir = dirname(dir)) {
    try {
      rmdirSync(dir)
    } catch {
      break
    }
  }
  return true
}

/** Removes a file if it is there. */
export function removeQuietly(path: string): void {
  try {
    unlinkSync(path)
  } catch {}
}

export function isMissing(error: unknown): boolean {
  const code = (error as { code?: string })?.code
  return code === 'ENOENT' || code === 'ENOTDIR'
}

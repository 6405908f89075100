/**
 * Multipart uploads, in their own area: `.store/uploads/<bucket>/<uploadId>/` holds `upload.json` (the key, when it
 * was initiated, the object's Content-Type, x-amz-meta-* and headers) and one file per part, its bare bytes, named
 * `<part number>.<ETag>` (`00001.9f17…`): the name carries the ETag, the file its size and time, so a part is one
 * rename. The directory appears whole (made in `.store/tmp/`, then renamed), parts are renamed into place when
 * whole, so an upload survives restarts and can be completed after one. Complete checks the list
 * (InvalidPartOrder, InvalidPart, EntityTooSmall), appends the parts to one temporary file with the kernel's copy
 * (Bun.write from a whole file to a descriptor: no part passes through the server's memory), adds the trailer,
 * renames it into place, then removes the upload.
 */
import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { join } from 'node:path'
import { commit, isMissing, trailer, type Layout, type ObjectInfo, type ReadPins } from './objects.ts'
import { compareKeys } from './list.ts'
import { errors, S3Error } from './xml.ts'

export interface UploadRecord {
  key: string
  /** ISO 8601 with milliseconds. */
  initiated: string
  contentType: string
  metadata: Record<string, string>
  headers: Record<string, string>
}

export interface PartInfo {
  partNumber: number
  etag: string
  size: number
  lastModified: number
  path: string
}

const MIN_PART_BYTES = 5 * 1024 * 1024
const UPLOAD_ID = /^[0-9a-f]{32}$/

export function checkPartNumber(text: string | null): number {
  const n = Number(text)
  if (!/^[0-9]{1,5}$/.test(text ?? '') || n < 1 || n > 10_000)
    throw errors.invalidArgument(
      'Part number must be an integer between 1 and 10000, inclusive.',
      'partNumber',
      text ?? ''
    )
  return n
}

export class Multipart {
  constructor(
    private readonly layout: Layout,
    private readonly pins: ReadPins
  ) {}

  private dir(bucket: string, uploadId: string): string {
    return join(this.layout.uploads(bucket), uploadId)
  }

  /** Where part `partNumber` with `etag` is kept. */
  partPath(bucket: string, uploadId: string, partNumber: number, etag: string): string {
    return join(this.dir(bucket, uploadId), `${String(partNumber).padStart(5, '0')}.${etag}`)
  }

  /** Puts a received part in place (replacing an earlier upload of its number); NoSuchUpload if it went meanwhile. */
  addPart(bucket: string, uploadId: string, partNumber: number, etag: string, temp: string): void {
    try {
      // No directories made on the way: an upload aborted meanwhile stays gone.
      renameSync(temp, this.partPath(bucket, uploadId, partNumber, etag))
    } catch (error) {
      rmSync(temp, { force: true })
      if (isMissing(error)) throw errors.noSuchUpload(uploadId)
      throw error
    }
    const number = String(partNumber).padStart(5, '0')
    for (const name of readdirSync(this.dir(bucket, uploadId)))
      if (name.startsWith(`${number}.`) && name !== `${number}.${etag}`)
        rmSync(join(this.dir(bucket, uploadId), name), { force: true })
  }

  create(bucket: string, record: UploadRecord): string {
    const uploadId = crypto.randomUUID().replaceAll('-', '')
    const temp = this.layout.temp()
    mkdirSync(temp)
    writeFileSync(join(temp, 'upload.json'), JSON.stringify(record))
    mkdirSync(this.layout.uploads(bucket), { recursive: true })
    renameSync(temp, this.dir(bucket, uploadId))
    return uploadId
  }

  /** The upload `uploadId` of `key`, or NoSuchUpload. */
  get(bucket: string, key: string, uploadId: string): UploadRecord {
    const record = UPLOAD_ID.test(uploadId) ? this.read(bucket, uploadId) : undefined
    if (!record || record.key !== key) throw errors.noSuchUpload(uploadId)
    return record
  }

  private read(bucket: string, uploadId: string): UploadRecord | undefined {
    try {
      return JSON.parse(readFileSync(join(this.dir(bucket, uploadId), 'upload.json'), 'utf8')) as UploadRecord
    } catch (error) {
      if (isMissing(error) || error instanceof SyntaxError) return undefined
      throw error
    }
  }

  /** The parts uploaded so far, by number (the latest where a number was uploaded twice). */
  parts(bucket: string, uploadId: string): PartInfo[] {
    const dir = this.dir(bucket, uploadId)
    let names: string[]
    try {
      names = readdirSync(dir)
    } catch (error) {
      if (isMissing(error)) throw errors.noSuchUpload(uploadId)
      throw error
    }
    const parts = new Map<number, PartInfo>()
    for (const name of names) {
      const m = /^([0-9]{5})\.([0-9a-f]{32})$/.exec(name)
      if (!m) continue
      let stat: { size: number; mtimeMs: number }
      try {
        stat = statSync(join(dir, name))
      } catch {
        continue // replaced meanwhile
      }
      const partNumber = Number(m[1])
      const earlier = parts.get(partNumber)
      if (earlier && earlier.lastModified > stat.mtimeMs) continue
      parts.set(partNumber, {
        partNumber,
        etag: m[2]!,
        size: stat.size,
        lastModified: stat.mtimeMs,
        path: join(dir, name),
      })
    }
    return [...parts.values()].sort((a, b) => a.partNumber - b.partNumber)
  }

  /** Assembles the object from the parts named (in order, with their ETags); returns its metadata. */
  async complete(
    bucket: string,
    key: string,
    uploadId: string,
    requested: { partNumber: number; etag: string }[]
  ): Promise<ObjectInfo> {
    const record = this.get(bucket, key, uploadId)
    const stored = new Map(this.parts(bucket, uploadId).map((p) => [p.partNumber, p]))
    const chosen: PartInfo[] = []
    requested.forEach(({ partNumber, etag }, i) => {
      if (i > 0 && partNumber <= requested[i - 1]!.partNumber)
        throw new S3Error(
          'InvalidPartOrder',
          400,
          'The list of parts was not in ascending order. Parts must be ordered by part number.',
          { UploadId: uploadId }
        )
      const part = stored.get(partNumber)
      if (!part || part.etag !== etag.replace(/^"|"$/g, ''))
        throw new S3Error(
          'InvalidPart',
          400,
          "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
          { UploadId: uploadId, PartNumber: String(partNumber), ETag: etag }
        )
      chosen.push(part)
    })
    chosen.forEach((part, i) => {
      if (i < chosen.length - 1 && part.size < MIN_PART_BYTES)
        throw new S3Error(
          'EntityTooSmall',
          400,
          'Your proposed upload is smaller than the minimum allowed object size: every part but the last must be at least 5 MiB.',
          {
            ProposedSize: String(part.size),
            MinSizeAllowed: String(MIN_PART_BYTES),
            PartNumber: String(requested[i]!.partNumber),
          }
        )
    })
    // The multipart ETag: a digest of the parts' ETags and their count, as S3 forms it (over ETags of our own).
    const digest = new Bun.CryptoHasher('md5')
    for (const part of chosen) digest.update(Buffer.from(part.etag, 'hex'))
    const size = chosen.reduce((sum, part) => sum + part.size, 0)
    const info: ObjectInfo = {
      etag: `${digest.digest('hex')}-${chosen.length}`,
      size,
      lastModified: Date.now(),
      contentType: record.contentType,
      metadata: record.metadata,
      headers: record.headers,
    }
    const temp = this.layout.temp()
    const fd = openSync(temp, 'w')
    try {
      // Whole files only: Bun 1.4.5's file-to-file copy ignores a slice's bounds.
      for (const part of chosen) if (part.size > 0) await Bun.write(Bun.file(fd), Bun.file(part.path))
      if (statSync(temp).size !== size) throw new Error(`assembling ${key}: a part changed while it was copied`)
      writeSync(fd, trailer(info))
    } catch (error) {
      closeSync(fd)
      rmSync(temp, { force: true })
      throw error
    }
    closeSync(fd)
    await commit(temp, this.layout.object(bucket, key), this.pins)
    rmSync(this.dir(bucket, uploadId), { recursive: true, force: true })
    return info
  }

  abort(bucket: string, key: string, uploadId: string): void {
    this.get(bucket, key, uploadId)
    // Renamed away first, so the upload disappears at once even if removing its parts takes a while.
    const temp = this.layout.temp()
    renameSync(this.dir(bucket, uploadId), temp)
    rmSync(temp, { recursive: true, force: true })
  }

  /** Uploads in progress under `prefix`, ordered by key then initiation, after the markers. */
  list(
    bucket: string,
    options: { prefix: string; keyMarker: string; uploadIdMarker: string; maxUploads: number }
  ): { uploads: (UploadRecord & { uploadId: string })[]; truncated: boolean } {
    let ids: string[] = []
    try {
      ids = readdirSync(this.layout.uploads(bucket)).filter((id) => UPLOAD_ID.test(id))
    } catch (error) {
      if (!isMissing(error)) throw error
    }
    const all = ids
      .flatMap((uploadId) => {
        const record = this.read(bucket, uploadId)
        return record?.key.startsWith(options.prefix) ? [{ ...record, uploadId }] : []
      })
      .sort(
        (a, b) =>
          compareKeys(a.key, b.key) || a.initiated.localeCompare(b.initiated) || a.uploadId.localeCompare(b.uploadId)
      )
    const after = all.filter((u) => {
      if (!options.keyMarker) return true
      const order = compareKeys(u.key, options.keyMarker)
      if (order !== 0) return order > 0
      if (!options.uploadIdMarker) return false
      const at = all.findIndex((x) => x.uploadId === options.uploadIdMarker)
      return at >= 0 && all.indexOf(u) > at
    })
    return { uploads: after.slice(0, options.maxUploads), truncated: after.length > options.maxUploads }
  }
}

/**
 * Listing a bucket (ListObjectsV2 and ListObjects): the bucket's directory tree walked in key order (UTF-8 byte
 * order, as S3 sorts), entering only directories that can hold keys under the prefix and after the marker; with the
 * delimiter `/` a directory becomes a CommonPrefix without being read through. Temporary files and multipart
 * uploads live outside the buckets' directories, so they never appear.
 */
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { decodeSegment, OBJECT_SUFFIX, statObject, type ObjectInfo } from './objects.ts'

export interface ListQuery {
  prefix: string
  delimiter: string
  maxKeys: number
  /** List keys after this one (start-after, marker, or the continuation token's key). */
  after: string
  /** Whether `after` was a common prefix returned before: then the keys under it are skipped too. */
  afterIsPrefix: boolean
}

export interface ListPage {
  objects: { key: string; info: ObjectInfo }[]
  prefixes: string[]
  truncated: boolean
  /** The last key or common prefix returned (where the next page starts). */
  last: string | undefined
}

/** Compares two strings in UTF-8 byte order (code point order), as S3 sorts keys. */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!
    const y = b.codePointAt(i)!
    if (x !== y) return x - y
    if (x > 0xffff) i++
  }
  return a.length - b.length
}

type Entry = { key: string; file?: string; dir?: string }

/** The keys under `dir` (whose keys begin with `base`), in order, skipping what cannot match. */
function* walk(dir: string, base: string, query: ListQuery): Generator<{ key: string; file: string }> {
  let names: string[]
  try {
    names = readdirSync(dir)
  } catch {
    return
  }
  const entries: Entry[] = []
  for (const name of names) {
    const isObject = name.endsWith(OBJECT_SUFFIX)
    const segment = decodeSegment(isObject ? name.slice(0, -1) : name)
    if (segment === undefined) continue
    const key = base + segment
    if (isObject) {
      if (key.startsWith(query.prefix) && compareKeys(key, query.after) > 0) entries.push({ key, file: name })
    } else {
      const inner = `${key}/`
      // Only directories on the way to the prefix or inside it, and not wholly before the marker.
      if (!(inner.startsWith(query.prefix) || query.prefix.startsWith(inner))) continue
      if (compareKeys(inner, query.after) <= 0 && !query.after.startsWith(inner)) continue
      if (query.afterIsPrefix && inner.startsWith(query.after)) continue
      entries.push({ key: inner, dir: name })
    }
  }
  entries.sort((a, b) => compareKeys(a.key, b.key))
  for (const entry of entries)
    if (entry.file) yield { key: entry.key, file: join(dir, entry.file) }
    else yield* walk(join(dir, entry.dir!), entry.key, query)
}

/** One page of a listing. */
export function listBucket(bucketDir: string, query: ListQuery): ListPage {
  const page: ListPage = { objects: [], prefixes: [], truncated: false, last: undefined }
  let lastPrefix: string | undefined
  for (const { key, file } of walk(bucketDir, '', query)) {
    let commonPrefix: string | undefined
    if (query.delimiter) {
      const at = key.indexOf(query.delimiter, query.prefix.length)
      if (at >= 0) commonPrefix = key.slice(0, at + query.delimiter.length)
    }
    if (commonPrefix !== undefined && commonPrefix === lastPrefix) continue
    // The common prefix the previous page ended with: the rest of it is skipped.
    if (commonPrefix !== undefined && query.afterIsPrefix && commonPrefix === query.after) continue
    const info = commonPrefix === undefined ? statObject(file) : undefined
    if (commonPrefix === undefined && !info) continue
    if (page.objects.length + page.prefixes.length >= query.maxKeys) {
      page.truncated = true
      break
    }
    if (commonPrefix !== undefined) {
      page.prefixes.push(commonPrefix)
      lastPrefix = commonPrefix
      page.last = commonPrefix
    } else {
      page.objects.push({ key, info: info! })
      page.last = key
    }
  }
  return page
}

/**
 * Data a `bun run start` of an earlier release left: until this store, the embedded one was npm `s3rver` 3.7.1,
 * whose files sit in the same directory. An object `k/e/y` of bucket `b` was `b/k/e/y._S3rver_object`, with
 * `y._S3rver_metadata.json` (Content-Type and the other stored headers, `x-amz-meta-*`) and `y._S3rver_object.md5`
 * beside it. Moved once, the first time this store opens the directory, so that nothing stored before the upgrade is
 * lost: each object is copied with its trailer to a temporary file, renamed into place, then s3rver's files are
 * removed (a move cut off midway is done again whole at the next start). s3rver's unfinished multipart uploads
 * (`._S3rver_uploads`) are dropped: their clients retry, and the API's sweep no longer sees them.
 */
import { appendFileSync, copyFileSync, readdirSync, readFileSync, rmSync, statSync, type Dirent } from 'node:fs'
import { join, relative, sep } from 'node:path'
import { commit, Layout, ReadPins, removeQuietly, STORED_HEADERS, trailer, type ObjectInfo } from './objects.ts'

const OBJECT = '._S3rver_object'
const METADATA = '._S3rver_metadata.json'
const UPLOADS = '._S3rver_uploads'

/** Moves every s3rver object under `layout.root` into this store's layout; resolves to how many were moved. */
export async function moveS3rverData(layout: Layout, pins: ReadPins): Promise<number> {
  let moved = 0
  for (const bucket of readdirSync(layout.root, { withFileTypes: true })) {
    if (!bucket.isDirectory() || bucket.name.startsWith('.')) continue
    const bucketDir = join(layout.root, bucket.name)
    for (const file of walk(bucketDir)) {
      if (!file.endsWith(OBJECT)) continue
      const key = relative(bucketDir, file.slice(0, -OBJECT.length)).split(sep).join('/')
      const base = file.slice(0, -OBJECT.length)
      const temp = layout.temp()
      copyFileSync(file, temp)
      appendFileSync(temp, trailer(infoOf(file, base)))
      await commit(temp, layout.object(bucket.name, key), pins)
      for (const old of [file, `${file}.md5`, `${base}${METADATA}`]) removeQuietly(old)
      moved++
    }
    rmSync(join(bucketDir, UPLOADS), { recursive: true, force: true })
  }
  return moved
}

/** What s3rver kept of an object, as this store keeps it. */
function infoOf(file: string, base: string): ObjectInfo {
  const stored = readJson(`${base}${METADATA}`)
  const md5 = readText(`${file}.md5`)
  const { size, mtimeMs } = statSync(file)
  const metadata: Record<string, string> = {}
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(stored)) {
    if (name.startsWith('x-amz-meta-')) metadata[name.slice('x-amz-meta-'.length)] = value
    else if (STORED_HEADERS.includes(name)) headers[name] = value
  }
  return {
    etag: md5 && /^[0-9a-f]{32}$/.test(md5) ? md5 : crypto.randomUUID().replaceAll('-', ''),
    size,
    lastModified: Math.floor(mtimeMs),
    contentType: stored['content-type'] ?? 'binary/octet-stream',
    metadata,
    headers,
  }
}

function* walk(dir: string): Generator<string> {
  let entries: Dirent[]
  try {
    entries = readdirSync(dir, { withFileTypes: true })
  } catch {
    return
  }
  for (const entry of entries) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) {
      if (entry.name !== UPLOADS) yield* walk(path)
    } else if (entry.isFile()) yield path
  }
}

function readJson(path: string): Record<string, string> {
  const text = readText(path)
  try {
    return text ? (JSON.parse(text) as Record<string, string>) : {}
  } catch {
    return {}
  }
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim()
  } catch {
    return undefined
  }
}

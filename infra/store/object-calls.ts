/** The calls on one object: PutObject, CopyObject, and GetObject or HeadObject (one Range, conditional headers). */
import { closeSync, copyFileSync, writeSync } from 'node:fs'
import { requireBucket } from './bucket-calls.ts'
import { commit, isMissing, openObject, removeQuietly, STORED_HEADERS, trailer, type ObjectInfo } from './objects.ts'
import { receive } from './receive.ts'
import {
  BUCKET_NAME,
  decode,
  describe,
  openObjectForAppend,
  parseRange,
  precondition,
  type StoreContext,
} from './requests.ts'
import { element, errors, S3Error, xmlResponse } from './xml.ts'

export async function putObject(
  store: StoreContext,
  path: string,
  request: Request,
  payloadHash: string
): Promise<Response> {
  const temp = store.layout.temp()
  const info = describe(request, crypto.randomUUID().replaceAll('-', ''))
  await receive(request, temp, payloadHash, (size) => trailer({ ...info, size, lastModified: Date.now() }))
  await commit(temp, path, store.pins)
  return new Response(null, { status: 200, headers: { ETag: `"${info.etag}"` } })
}

export async function copyObject(
  store: StoreContext,
  bucket: string,
  key: string,
  path: string,
  request: Request
): Promise<Response> {
  const source = request.headers.get('x-amz-copy-source')!
  const parsed = /^\/?([^/]+)\/(.+)$/.exec(decode(source.split('?')[0] ?? ''))
  if (!parsed)
    throw errors.invalidArgument(
      'Copy Source must mention the source bucket and key: sourcebucket/sourcekey.',
      'x-amz-copy-source',
      source
    )
  const sourceBucket = parsed[1]!
  const sourceKey = parsed[2]!
  if (!BUCKET_NAME.test(sourceBucket)) throw errors.noSuchBucket(sourceBucket)
  requireBucket(store, sourceBucket)
  const directive = (request.headers.get('x-amz-metadata-directive') ?? 'COPY').toUpperCase()
  if (directive !== 'COPY' && directive !== 'REPLACE')
    throw errors.invalidArgument('Unknown metadata directive.', 'x-amz-metadata-directive', directive)
  if (sourceBucket === bucket && sourceKey === key && directive === 'COPY')
    throw new S3Error(
      'InvalidRequest',
      400,
      "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
    )
  // The whole file is copied (one read of it: old or new, never a mix), then its trailer replaced.
  const temp = store.layout.temp()
  try {
    copyFileSync(store.layout.object(sourceBucket, sourceKey), temp)
  } catch (error) {
    if (isMissing(error)) throw errors.noSuchKey(sourceKey)
    throw error
  }
  const opened = openObject(temp)
  if (!opened) {
    removeQuietly(temp)
    throw errors.noSuchKey(sourceKey)
  }
  closeSync(opened.fd)
  const sourceInfo = opened.info
  const info: ObjectInfo =
    directive === 'COPY'
      ? { ...sourceInfo, lastModified: Date.now() }
      : { ...describe(request, sourceInfo.etag), size: sourceInfo.size, lastModified: Date.now() }
  const fd = openObjectForAppend(temp, sourceInfo.size)
  try {
    const bytes = trailer(info)
    writeSync(fd, bytes, 0, bytes.length, sourceInfo.size)
  } finally {
    closeSync(fd)
  }
  await commit(temp, path, store.pins)
  return xmlResponse(
    'CopyObjectResult',
    element('LastModified', new Date(info.lastModified).toISOString()) + element('ETag', `"${info.etag}"`)
  )
}

export function getObject(
  store: StoreContext,
  path: string,
  key: string,
  request: Request,
  params: URLSearchParams
): Response {
  const opened = openObject(path)
  if (!opened) throw errors.noSuchKey(key)
  const { info } = opened
  const headers: Record<string, string> = {
    'Content-Type': info.contentType,
    ETag: `"${info.etag}"`,
    'Last-Modified': new Date(info.lastModified).toUTCString(),
    'Accept-Ranges': 'bytes',
  }
  for (const [name, value] of Object.entries(info.headers)) headers[name] = value
  for (const [name, value] of Object.entries(info.metadata)) headers[`x-amz-meta-${name}`] = value
  for (const name of ['content-type', ...STORED_HEADERS]) {
    const override = params.get(`response-${name}`)
    if (override !== null) headers[name === 'content-type' ? 'Content-Type' : name] = override
  }
  const notModified = precondition(request, info)
  if (notModified) {
    closeSync(opened.fd)
    if (notModified === 304)
      return new Response(null, {
        status: 304,
        headers: { ETag: `"${info.etag}"`, 'Last-Modified': new Date(info.lastModified).toUTCString() },
      })
    throw new S3Error('PreconditionFailed', 412, 'At least one of the pre-conditions you specified did not hold.')
  }
  const range = parseRange(request.headers.get('range'), info.size)
  if (range === 'unsatisfiable') {
    closeSync(opened.fd)
    throw new S3Error(
      'InvalidRange',
      416,
      'The requested range is not satisfiable',
      {
        RangeRequested: request.headers.get('range')!,
        ActualObjectSize: String(info.size),
      },
      { 'Content-Range': `bytes */${info.size}` }
    )
  }
  const [first, last] = range ?? [0, info.size - 1]
  headers['Content-Length'] = String(last - first + 1)
  if (range) headers['Content-Range'] = `bytes ${first}-${last}/${info.size}`
  const status = range ? 206 : 200
  closeSync(opened.fd)
  if (request.method === 'HEAD' || info.size === 0) return new Response(null, { status, headers })
  // Pinned before the trailer was read (see ReadPins): the file Bun opens is this one.
  return new Response(Bun.file(path).slice(first, last + 1), { status, headers })
}

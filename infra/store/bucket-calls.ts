/** The bucket-level calls: ListBuckets, Create/Delete/Head bucket, ListObjects (v1 and v2) and DeleteObjects. */
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs'
import { listBucket, type ListQuery } from './list.ts'
import { isMissing, removeObject } from './objects.ts'
import { BUCKET_NAME, numberParam, OWNER, readSmallBody, type StoreContext } from './requests.ts'
import { element, errors, S3Error, unescapeXml, xmlResponse } from './xml.ts'

const ALL: ListQuery = { prefix: '', delimiter: '', maxKeys: 1000, after: '', afterIsPrefix: false }

export function requireBucket(store: StoreContext, bucket: string): void {
  try {
    if (statSync(store.layout.bucket(bucket)).isDirectory()) return
  } catch (error) {
    if (!isMissing(error)) throw error
  }
  throw errors.noSuchBucket(bucket)
}

export function listBuckets(store: StoreContext): Response {
  const buckets = readdirSync(store.layout.root).filter((name) => BUCKET_NAME.test(name))
  const inner = buckets
    .map((name) => {
      const created = statSync(store.layout.bucket(name)).birthtime.toISOString()
      return `<Bucket>${element('Name', name)}${element('CreationDate', created)}</Bucket>`
    })
    .join('')
  return xmlResponse('ListAllMyBucketsResult', `${OWNER}<Buckets>${inner}</Buckets>`)
}

export async function createBucket(
  store: StoreContext,
  bucket: string,
  request: Request,
  payloadHash: string
): Promise<Response> {
  await readSmallBody(request, payloadHash, 64 * 1024)
  mkdirSync(store.layout.bucket(bucket), { recursive: true })
  return new Response(null, { status: 200, headers: { Location: `/${bucket}` } })
}

export function deleteBucket(store: StoreContext, bucket: string): Response {
  const page = listBucket(store.layout.bucket(bucket), { ...ALL, maxKeys: 1 })
  if (page.objects.length > 0)
    throw new S3Error('BucketNotEmpty', 409, 'The bucket you tried to delete is not empty.', { BucketName: bucket })
  rmSync(store.layout.bucket(bucket), { recursive: true, force: true })
  rmSync(store.layout.uploads(bucket), { recursive: true, force: true })
  return new Response(null, { status: 204 })
}

export function listObjects(store: StoreContext, bucket: string, params: URLSearchParams): Response {
  const v2 = params.get('list-type') === '2'
  const prefix = params.get('prefix') ?? ''
  const delimiter = params.get('delimiter') ?? ''
  const maxKeys = Math.min(numberParam(params, 'max-keys', 1000), 1000)
  const encodingType = params.get('encoding-type')
  if (encodingType !== null && encodingType !== 'url')
    throw errors.invalidArgument('Invalid Encoding Method specified in Request', 'encoding-type', encodingType)
  const encode = (text: string) => (encodingType === 'url' ? encodeURIComponent(text).replace(/%2F/g, '/') : text)
  let after = ''
  let afterIsPrefix = false
  const token = params.get('continuation-token')
  if (v2 && token !== null) {
    try {
      ;[after, afterIsPrefix] = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as [string, boolean]
      if (typeof after !== 'string') throw new Error()
    } catch {
      throw errors.invalidArgument('The continuation token provided is incorrect', 'continuation-token', token)
    }
  } else if (v2) after = params.get('start-after') ?? ''
  else {
    after = params.get('marker') ?? ''
    afterIsPrefix = delimiter !== '' && after.endsWith(delimiter)
  }
  const query: ListQuery = { prefix, delimiter, maxKeys, after, afterIsPrefix }
  const page =
    maxKeys === 0
      ? { objects: [], prefixes: [], truncated: false, last: undefined }
      : listBucket(store.layout.bucket(bucket), query)
  const contents = page.objects
    .map(
      ({ key, info }) =>
        `<Contents>${element('Key', encode(key))}${element('LastModified', new Date(info.lastModified).toISOString())}${element('ETag', `"${info.etag}"`)}${element('Size', info.size)}<StorageClass>STANDARD</StorageClass>${v2 ? '' : OWNER}</Contents>`
    )
    .join('')
  const prefixes = page.prefixes.map((p) => `<CommonPrefixes>${element('Prefix', encode(p))}</CommonPrefixes>`).join('')
  const head =
    element('Name', bucket) +
    element('Prefix', encode(prefix)) +
    (delimiter ? element('Delimiter', encode(delimiter)) : '') +
    element('MaxKeys', maxKeys) +
    (encodingType ? element('EncodingType', encodingType) : '') +
    element('IsTruncated', page.truncated)
  if (v2) {
    const next =
      page.truncated && page.last !== undefined
        ? Buffer.from(JSON.stringify([page.last, page.prefixes.at(-1) === page.last])).toString('base64url')
        : undefined
    return xmlResponse(
      'ListBucketResult',
      head +
        element('KeyCount', page.objects.length + page.prefixes.length) +
        element('ContinuationToken', token ?? undefined) +
        element('NextContinuationToken', next) +
        element('StartAfter', params.get('start-after') === null ? undefined : encode(params.get('start-after')!)) +
        contents +
        prefixes
    )
  }
  const nextMarker = page.truncated && delimiter ? page.last : undefined
  return xmlResponse(
    'ListBucketResult',
    head +
      element('Marker', encode(params.get('marker') ?? '')) +
      element('NextMarker', nextMarker === undefined ? undefined : encode(nextMarker)) +
      contents +
      prefixes
  )
}

export async function deleteObjects(
  store: StoreContext,
  bucket: string,
  request: Request,
  payloadHash: string
): Promise<Response> {
  const xml = await readSmallBody(request, payloadHash, 2 * 1024 * 1024)
  const root = /<Delete(?:\s[^>]*)?>([\s\S]*)<\/Delete>\s*$/.exec(xml.replace(/^\s*<\?xml[^>]*\?>/, '').trim())
  if (!root) throw errors.malformedXml('the root element is not Delete')
  const quiet = /<Quiet>\s*true\s*<\/Quiet>/.test(root[1] ?? '')
  const keys = [...(root[1] ?? '').matchAll(/<Object>[\s\S]*?<Key>([\s\S]*?)<\/Key>[\s\S]*?<\/Object>/g)].map((m) =>
    unescapeXml(m[1] ?? '')
  )
  if (keys.length === 0 || keys.length > 1000) throw errors.malformedXml('Delete must name from 1 to 1000 objects')
  let inner = ''
  for (const key of keys) {
    try {
      await removeObject(store.layout.bucket(bucket), store.layout.object(bucket, key), store.pins)
      if (!quiet) inner += `<Deleted>${element('Key', key)}</Deleted>`
    } catch (error) {
      const s3Error =
        error instanceof S3Error ? error : new S3Error('InternalError', 500, 'We encountered an internal error.')
      inner += `<Error>${element('Key', key)}${element('Code', s3Error.code)}${element('Message', s3Error.message)}</Error>`
    }
  }
  return xmlResponse('DeleteResult', inner)
}

/**
 * The store's HTTP side on Bun.serve: CORS, authentication (sigv4.ts), and routing of path-style requests
 * (`/<bucket>/<key>`) to the calls (bucket-calls.ts, object-calls.ts, upload-calls.ts), which answer in S3's XML.
 * Every failure becomes an S3 error answer; the server keeps serving whatever a request holds.
 */
import { mkdirSync, rmSync } from 'node:fs'
import { createBucket, deleteBucket, deleteObjects, listBuckets, listObjects, requireBucket } from './bucket-calls.ts'
import { Multipart } from './multipart.ts'
import { copyObject, getObject, putObject } from './object-calls.ts'
import { Layout, ReadPins, removeObject } from './objects.ts'
import { BUCKET_NAME, decode, type StoreContext } from './requests.ts'
import { verifyRequest, type Credentials } from './sigv4.ts'
import { completeUpload, createUpload, listParts, listUploads, uploadPart } from './upload-calls.ts'
import { errorResponse, errors, S3Error, xmlResponse } from './xml.ts'

export interface StoreOptions {
  directory: string
  port: number
  hostname: string
  credentials: Credentials
}

const METHODS = 'GET, HEAD, PUT, POST, DELETE'
/** What a browser may read from an answer: ETag for multipart uploads, the range and object headers for players. */
const EXPOSED =
  'ETag, Content-Length, Content-Range, Content-Type, Content-Disposition, Accept-Ranges, Last-Modified, Date, x-amz-request-id, x-amz-id-2, x-amz-version-id, x-amz-delete-marker'
/** Query parameters that name a subresource (an operation of its own) rather than an option of the call. */
const SUBRESOURCES = [
  'accelerate',
  'acl',
  'analytics',
  'attributes',
  'cors',
  'encryption',
  'intelligent-tiering',
  'inventory',
  'legal-hold',
  'lifecycle',
  'logging',
  'metrics',
  'notification',
  'object-lock',
  'ownershipControls',
  'policy',
  'policyStatus',
  'publicAccessBlock',
  'replication',
  'requestPayment',
  'restore',
  'retention',
  'select',
  'tagging',
  'torrent',
  'versioning',
  'versions',
  'website',
]

export function startStore(options: StoreOptions) {
  const layout = new Layout(options.directory)
  mkdirSync(options.directory, { recursive: true })
  rmSync(layout.tmp, { recursive: true, force: true })
  mkdirSync(layout.tmp, { recursive: true })
  const pins = new ReadPins()
  const multipart = new Multipart(layout, pins)
  const store: StoreContext = { layout, pins, multipart, origin: () => server.url.origin }
  let requests = 0

  const server = Bun.serve({
    hostname: options.hostname,
    port: options.port,
    // Parts and objects up to S3's 5 GiB, streamed to disk; a slow upload only needs to make progress now and then.
    maxRequestBodySize: 5 * 1024 ** 3 + 1024 * 1024,
    idleTimeout: 255,
    async fetch(request) {
      const requestId = `${process.pid.toString(16)}-${(++requests).toString(16).padStart(8, '0')}`
      let response: Response
      try {
        response = await handle(request)
      } catch (error) {
        if (!(error instanceof S3Error)) console.error('s3 store: internal error', error)
        const s3Error =
          error instanceof S3Error
            ? error
            : new S3Error('InternalError', 500, 'We encountered an internal error. Please try again.')
        response = errorResponse(s3Error, requestId, request.method === 'HEAD')
      }
      response.headers.set('x-amz-request-id', requestId)
      if (request.headers.has('origin') && request.method !== 'OPTIONS') {
        response.headers.set('Access-Control-Allow-Origin', '*')
        response.headers.set('Access-Control-Expose-Headers', EXPOSED)
        response.headers.append('Vary', 'Origin')
      }
      return response
    },
    error(error) {
      console.error('s3 store: internal error', error)
      return new Response(null, { status: 500 })
    },
  })

  async function handle(request: Request): Promise<Response> {
    const url = request.url
    const start = url.indexOf('/', url.indexOf('//') + 2)
    const queryAt = url.indexOf('?', start)
    const rawPath = start < 0 ? '/' : url.slice(start, queryAt < 0 ? undefined : queryAt)
    const rawQuery = queryAt < 0 ? '' : url.slice(queryAt + 1)
    if (request.method === 'OPTIONS') return preflight(request)
    const payloadHash = verifyRequest(request, { path: rawPath, query: rawQuery }, options.credentials)
    const slash = rawPath.indexOf('/', 1)
    const bucket = decode(slash < 0 ? rawPath.slice(1) : rawPath.slice(1, slash))
    const key = slash < 0 ? '' : decode(rawPath.slice(slash + 1))
    const params = new URLSearchParams(rawQuery)
    const method = request.method
    if (!bucket) {
      if (method === 'GET') return listBuckets(store)
      throw errors.notImplemented(`${method} /`)
    }
    if (!BUCKET_NAME.test(bucket))
      throw new S3Error('InvalidBucketName', 400, 'The specified bucket is not valid.', { BucketName: bucket })
    const subresource = SUBRESOURCES.find((name) => params.has(name))
    if (subresource) throw errors.notImplemented(operationName(method, key, subresource))
    if (!key) {
      if (method === 'PUT') return createBucket(store, bucket, request, payloadHash)
      requireBucket(store, bucket)
      if (method === 'HEAD') return new Response(null, { status: 200 })
      if (method === 'DELETE') return deleteBucket(store, bucket)
      if (method === 'GET' && params.has('uploads')) return listUploads(store, bucket, params)
      if (method === 'GET' && params.has('location')) return xmlResponse('LocationConstraint', '')
      if (method === 'GET') return listObjects(store, bucket, params)
      if (method === 'POST' && params.has('delete')) return deleteObjects(store, bucket, request, payloadHash)
      throw errors.notImplemented(`${method} on a bucket`)
    }
    requireBucket(store, bucket)
    const path = layout.object(bucket, key)
    const uploadId = params.get('uploadId')
    switch (method) {
      case 'GET':
        if (uploadId !== null) return listParts(store, bucket, key, uploadId, params)
        await pins.pin(path)
        return getObject(store, path, key, request, params)
      case 'HEAD':
        return getObject(store, path, key, request, params)
      case 'PUT':
        if (uploadId !== null) {
          if (request.headers.has('x-amz-copy-source')) throw errors.notImplemented('UploadPartCopy')
          return uploadPart(store, bucket, key, uploadId, params, request, payloadHash)
        }
        if (request.headers.has('x-amz-copy-source')) return copyObject(store, bucket, key, path, request)
        return putObject(store, path, request, payloadHash)
      case 'DELETE':
        if (uploadId !== null) {
          multipart.abort(bucket, key, uploadId)
          return new Response(null, { status: 204 })
        }
        await removeObject(layout.bucket(bucket), path, pins)
        return new Response(null, { status: 204 })
      case 'POST':
        if (params.has('uploads')) return createUpload(store, bucket, key, request)
        if (uploadId !== null) return completeUpload(store, bucket, key, uploadId, request, payloadHash)
        throw errors.notImplemented('POST on an object (browser form uploads, restore, select)')
    }
    throw errors.notImplemented(`${method} on an object`)
  }

  return {
    port: server.port as number,
    async close() {
      await server.stop(true)
    },
  }
}

/** The CORS preflight: any origin, the methods the store has, the headers asked for. */
function preflight(request: Request): Response {
  if (!request.headers.get('origin'))
    throw new S3Error('BadRequest', 400, 'Insufficient information. Origin request header needed.')
  const method = request.headers.get('access-control-request-method')
  if (!method || !METHODS.split(', ').includes(method))
    throw new S3Error(
      'CORSResponse',
      403,
      `This CORS request is not allowed: method ${method ?? '(none)'} (allowed: ${METHODS}).`
    )
  const headers: Record<string, string> = {
    'Access-Control-Allow-Origin': '*',
    'Access-Control-Allow-Methods': METHODS,
    'Access-Control-Expose-Headers': EXPOSED,
    'Access-Control-Max-Age': '3000',
    Vary: 'Origin, Access-Control-Request-Headers, Access-Control-Request-Method',
  }
  const asked = request.headers.get('access-control-request-headers')
  if (asked) headers['Access-Control-Allow-Headers'] = asked
  return new Response(null, { status: 200, headers })
}

/** S3's name for an operation on a subresource: GetObjectTagging, PutBucketCors… */
function operationName(method: string, key: string, subresource: string): string {
  const verb = { GET: 'Get', PUT: 'Put', DELETE: 'Delete', POST: 'Post', HEAD: 'Head' }[method] ?? method
  const name = subresource.replace(/(^|-)([a-z])/g, (_, __, c: string) => c.toUpperCase())
  return `${verb}${key ? 'Object' : 'Bucket'}${name} (${method} ?${subresource})`
}

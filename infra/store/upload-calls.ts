/**
 * The multipart calls, over the uploads multipart.ts keeps on disk: CreateMultipartUpload, UploadPart, ListParts,
 * CompleteMultipartUpload and ListMultipartUploads (AbortMultipartUpload is one call of multipart.ts).
 */
import { checkPartNumber } from './multipart.ts'
import { receive } from './receive.ts'
import { describe, numberParam, OWNER, readSmallBody, type StoreContext } from './requests.ts'
import { element, readCompleteBody, xmlResponse } from './xml.ts'

export function createUpload(store: StoreContext, bucket: string, key: string, request: Request): Response {
  const described = describe(request, '')
  const uploadId = store.multipart.create(bucket, {
    key,
    initiated: new Date().toISOString(),
    contentType: described.contentType,
    metadata: described.metadata,
    headers: described.headers,
  })
  return xmlResponse(
    'InitiateMultipartUploadResult',
    element('Bucket', bucket) + element('Key', key) + element('UploadId', uploadId)
  )
}

export async function uploadPart(
  store: StoreContext,
  bucket: string,
  key: string,
  uploadId: string,
  params: URLSearchParams,
  request: Request,
  payloadHash: string
): Promise<Response> {
  const partNumber = checkPartNumber(params.get('partNumber'))
  store.multipart.get(bucket, key, uploadId)
  const temp = store.layout.temp()
  const etag = crypto.randomUUID().replaceAll('-', '')
  await receive(request, temp, payloadHash, undefined)
  store.multipart.addPart(bucket, uploadId, partNumber, etag, temp)
  return new Response(null, { status: 200, headers: { ETag: `"${etag}"` } })
}

export function listParts(
  store: StoreContext,
  bucket: string,
  key: string,
  uploadId: string,
  params: URLSearchParams
): Response {
  store.multipart.get(bucket, key, uploadId)
  const marker = numberParam(params, 'part-number-marker', 0)
  const maxParts = Math.min(numberParam(params, 'max-parts', 1000), 1000)
  const after = store.multipart.parts(bucket, uploadId).filter((p) => p.partNumber > marker)
  const page = after.slice(0, maxParts)
  const truncated = after.length > page.length
  const parts = page
    .map(
      (part) =>
        `<Part>${element('PartNumber', part.partNumber)}${element('LastModified', new Date(part.lastModified).toISOString())}${element('ETag', `"${part.etag}"`)}${element('Size', part.size)}</Part>`
    )
    .join('')
  return xmlResponse(
    'ListPartsResult',
    element('Bucket', bucket) +
      element('Key', key) +
      element('UploadId', uploadId) +
      `<Initiator><ID>local</ID><DisplayName>local</DisplayName></Initiator>${OWNER}<StorageClass>STANDARD</StorageClass>` +
      element('PartNumberMarker', marker) +
      element('NextPartNumberMarker', page.at(-1)?.partNumber ?? marker) +
      element('MaxParts', maxParts) +
      element('IsTruncated', truncated) +
      parts
  )
}

export async function completeUpload(
  store: StoreContext,
  bucket: string,
  key: string,
  uploadId: string,
  request: Request,
  payloadHash: string
): Promise<Response> {
  store.multipart.get(bucket, key, uploadId)
  const parts = readCompleteBody(await readSmallBody(request, payloadHash, 4 * 1024 * 1024))
  const info = await store.multipart.complete(bucket, key, uploadId, parts)
  return xmlResponse(
    'CompleteMultipartUploadResult',
    element('Location', `${store.origin()}/${bucket}/${key}`) +
      element('Bucket', bucket) +
      element('Key', key) +
      element('ETag', `"${info.etag}"`)
  )
}

export function listUploads(store: StoreContext, bucket: string, params: URLSearchParams): Response {
  const prefix = params.get('prefix') ?? ''
  const keyMarker = params.get('key-marker') ?? ''
  const uploadIdMarker = params.get('upload-id-marker') ?? ''
  const maxUploads = Math.min(numberParam(params, 'max-uploads', 1000), 1000)
  const { uploads, truncated } = store.multipart.list(bucket, { prefix, keyMarker, uploadIdMarker, maxUploads })
  const last = uploads.at(-1)
  return xmlResponse(
    'ListMultipartUploadsResult',
    element('Bucket', bucket) +
      element('KeyMarker', keyMarker) +
      element('UploadIdMarker', uploadIdMarker) +
      element('NextKeyMarker', truncated ? last?.key : undefined) +
      element('NextUploadIdMarker', truncated ? last?.uploadId : undefined) +
      element('Prefix', prefix) +
      element('MaxUploads', maxUploads) +
      element('IsTruncated', truncated) +
      uploads
        .map(
          (u) =>
            `<Upload>${element('Key', u.key)}${element('UploadId', u.uploadId)}<Initiator><ID>local</ID><DisplayName>local</DisplayName></Initiator>${OWNER}<StorageClass>STANDARD</StorageClass>${element('Initiated', u.initiated)}</Upload>`
        )
        .join('')
  )
}

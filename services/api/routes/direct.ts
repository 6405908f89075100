/**
 * `/v1/direct-uploads`: the client uploads straight to S3 with presigned URLs and tells the API when it is done; the
 * API then reads the object's size and first bytes, refuses (and deletes) what POST /v1/media would refuse, and
 * otherwise makes the media and its job. The routes are shaped as Uppy's Companion serves them (`/s3/params`,
 * `/s3/multipart/…`), so a browser using @uppy/aws-s3 points its `endpoint` here and needs no code of its own; a
 * single PUT is completed with `POST /complete?key=`. Every key handed out is recorded with its tenant: another
 * tenant's key, or one never handed out, answers 404.
 */
import { Hono } from 'hono'
import { createHash } from 'node:crypto'
import * as v from 'valibot'
import { formatTraceparent, type TraceContext } from '@app/shared'
import type { Logger } from '@app/shared/ops'
import { admitMedia } from '../admit.ts'
import type { AppDeps } from '../app.ts'
import type { Caller, Keyed } from '../auth.ts'
import { AcceptedSchema, type Accepted } from '../bodies.ts'
import { ApiError } from '../errors.ts'
import { sanitizeFilename } from '../filename.ts'
import { IDEMPOTENCY_KEY, claimKey, idempotencyKeyOf, replay } from '../idempotency.ts'
import { judgeHead, tooLarge } from '../intake.ts'
import { API_KEY, documenter, jsonAnswer } from '../openapi.ts'
import { PRESIGNED_SECONDS, type UploadedPart } from '../presign.ts'
import { originalKey, stagingKey } from '../recipes.ts'
import { SNIFF_BYTES } from '../sniff.ts'
import type { DirectUpload } from '../store.ts'
import { json, param, query } from '../validate.ts'

const Text = (max: number) => v.pipe(v.string(), v.maxLength(max))
const KeyQuery = v.object({ key: Text(512) })
const ParamsQuery = v.object({ filename: v.optional(Text(1024)), type: v.optional(Text(255)) })
const MultipartBody = v.object({ filename: v.optional(Text(1024)), type: v.optional(Text(255)), metadata: v.optional(v.record(v.string(), v.unknown())) })
const UploadParams = v.object({ uploadId: v.pipe(v.string(), v.minLength(1), v.maxLength(1024)) })
const PartNumber = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(10_000))
const PartParams = v.object({ ...UploadParams.entries, partNumber: v.pipe(v.string(), v.regex(/^\d{1,5}$/, 'must be a part number'), v.transform(Number), PartNumber) })
const BatchQuery = v.object({
  ...KeyQuery.entries,
  partNumbers: v.pipe(
    v.string(),
    v.regex(/^\d{1,5}(,\d{1,5}){0,999}$/, 'must be part numbers, comma-separated, such as 1,2,3'),
    v.transform((s) => s.split(',').map(Number)),
    v.array(PartNumber)
  ),
})
const CompleteBody = v.object({
  parts: v.pipe(v.array(v.object({ PartNumber, ETag: Text(256) })), v.minLength(1, 'must list the uploaded parts'), v.maxLength(10_000)),
})

const doc = documenter({ tag: 'media', security: API_KEY, errors: [401, 429] })

export function directRoutes(deps: AppDeps, keyed: Keyed) {
  const { presigner, store } = deps

  /** Records a new upload for the caller: the media id it becomes, and its object key. */
  const handOut = async (tenant: string, filename: string | undefined, uploadId: string | null, id: string): Promise<DirectUpload> => {
    const upload = { key: originalKey(deps.system, id), id, tenant, uploadId, filename: filename ? sanitizeFilename(filename) : null, mediaId: null, createdAt: Date.now() }
    await store.recordDirectUpload(upload)
    return upload
  }
  /** The caller's upload at `key` (of that multipart upload, when given); 404 otherwise. */
  const owned = async (tenant: string, key: string, uploadId?: string): Promise<DirectUpload> => {
    const upload = await store.getDirectUpload(key)
    if (!upload || upload.tenant !== tenant || (uploadId !== undefined && upload.uploadId !== uploadId)) {
      throw new ApiError(404, 'not_found', `no direct upload ${uploadId ?? key} of this API key's tenant`)
    }
    return upload
  }

  /**
   * The uploaded object becomes a media: refused (and deleted) when it is missing, empty, too large or not an
   * accepted kind. Completing one that was completed answers the same media; two at once: one waits its turn (409).
   */
  const admit = async (upload: DirectUpload, caller: { trace: TraceContext; log: Logger }): Promise<Accepted> => {
    if (upload.mediaId) return accepted(upload.mediaId)
    const holder = `${deps.instanceId}:${crypto.randomUUID()}`
    if (!(await store.claimLease(`direct:${upload.key}`, holder, 60_000))) throw new ApiError(409, 'conflict', 'this upload is being completed by another request')
    try {
      const again = await store.getDirectUpload(upload.key)
      if (again?.mediaId) return accepted(again.mediaId)
      const staged = upload.uploadId === null ? stagingKey(deps.system, upload.id) : null
      const refuse = async (error: ApiError) => {
        await s3(() => Promise.all([presigner.remove(upload.key), staged && presigner.remove(staged)]))
        await store.deleteDirectUpload(upload.key)
        return error
      }
      if (staged) {
        // The presigned PUT wrote the staging object, and may write it again until its URL expires: the original is
        // a copy the client cannot write to, judged below, and the job reads that.
        const stagedSize = await s3(() => presigner.size(staged))
        if (stagedSize === null) throw new ApiError(409, 'conflict', `nothing has been uploaded to ${upload.key} yet`)
        if (stagedSize > deps.maxUploadBytes) throw await refuse(tooLarge(deps.maxUploadBytes))
        await s3(() => presigner.copy(staged, upload.key))
      }
      const size = await s3(() => presigner.size(upload.key))
      if (size === null) throw new ApiError(409, 'conflict', `nothing has been uploaded to ${upload.key} yet`)
      if (size === 0) throw await refuse(new ApiError(400, 'empty_body', 'the upload is empty'))
      if (size > deps.maxUploadBytes) throw await refuse(tooLarge(deps.maxUploadBytes))
      let sniffed
      try {
        sniffed = judgeHead(await s3(() => presigner.head(upload.key, SNIFF_BYTES)))
      } catch (error) {
        throw error instanceof ApiError && error.status === 415 ? await refuse(error) : error
      }
      const original = { id: upload.id, tenant: upload.tenant, filename: upload.filename, kind: sniffed.kind, format: sniffed.format, size, sourceKey: upload.key }
      const answer = await admitMedia(deps, { ...original, traceparent: formatTraceparent(caller.trace) }, caller.log)
      await store.completeDirectUpload(upload.key, answer.id)
      // Not needed any more (the upload sweep removes it if this fails, or if the URL writes it again).
      if (staged) await presigner.remove(staged).catch(() => {})
      return answer
    } finally {
      await store.releaseLease(`direct:${upload.key}`, holder)
    }
  }
  const accepted = async (mediaId: string): Promise<Accepted> => {
    const media = await store.getMedia(mediaId)
    if (!media) throw new ApiError(404, 'not_found', `media ${mediaId} of this upload was deleted`)
    return { id: media.id, jobId: media.jobId, kind: media.kind, status: 'queued' }
  }

  /**
   * A completion with an Idempotency-Key: a retry gets the first answer (the same key with other parts: 422).
   * Completions are idempotent by themselves too (a completed upload answers its media), so this only adds the 422.
   */
  const withKey = async (tenant: string, header: string | undefined, fingerprint: string, complete: () => Promise<Accepted>) => {
    const key = idempotencyKeyOf(header)
    const claim = key ? await claimKey(store, tenant, key) : null
    if (claim && 'answered' in claim) return { accepted: replay(claim, fingerprint).body as Accepted, replayed: true }
    try {
      const answer = await complete()
      await claim?.claimed.answer(fingerprint, { status: 202, body: JSON.stringify(answer), location: `/v1/media/${answer.id}` })
      return { accepted: answer, replayed: false }
    } catch (error) {
      await claim?.claimed.release().catch(() => {})
      throw error
    }
  }
  const fingerprintOf = (...parts: unknown[]) => createHash('sha256').update(JSON.stringify(parts)).digest('hex')

  return (
    new Hono<Caller>()
      .use('*', keyed)

      /** A single presigned PUT (Companion's `GET /s3/params`, PUT flavour). */
      .get('/s3/params', paramsDoc, query(ParamsQuery), async (c) => {
        const { filename, type } = c.req.valid('query')
        const upload = await handOut(c.get('tenant'), filename, null, crypto.randomUUID())
        const url = await s3(() => presigner.putUrl(stagingKey(deps.system, upload.id), type))
        return c.json({ method: 'PUT' as const, url, fields: {}, headers: type ? { 'content-type': type } : {}, expires: PRESIGNED_SECONDS, key: upload.key }, 200)
      })

      /** Tells the API a single PUT is done. */
      .post('/complete', completeDoc, query(KeyQuery), async (c) => {
        const upload = await owned(c.get('tenant'), c.req.valid('query').key)
        const { accepted: answer, replayed } = await withKey(c.get('tenant'), c.req.header(IDEMPOTENCY_KEY), fingerprintOf(upload.key), () => admit(upload, c.var))
        c.header('Location', `/v1/media/${answer.id}`)
        if (replayed) c.header('Idempotent-Replayed', 'true')
        return c.json(answer, 202)
      })

      .post('/s3/multipart', createMultipartDoc, json(MultipartBody), async (c) => {
        const { filename, type } = c.req.valid('json')
        const id = crypto.randomUUID()
        const key = originalKey(deps.system, id)
        const uploadId = await s3(() => presigner.createMultipart(key, type))
        await handOut(c.get('tenant'), filename, uploadId, id)
        return c.json({ key, uploadId, bucket: deps.s3.bucket }, 200)
      })

      .get('/s3/multipart/:uploadId', listPartsDoc, param(UploadParams, 404), query(KeyQuery), async (c) => {
        const upload = await owned(c.get('tenant'), c.req.valid('query').key, c.req.valid('param').uploadId)
        return c.json(await s3(() => presigner.listParts(upload.key, upload.uploadId!)), 200)
      })

      .get('/s3/multipart/:uploadId/batch', batchDoc, param(UploadParams, 404), query(BatchQuery), async (c) => {
        const { key, partNumbers } = c.req.valid('query')
        const upload = await owned(c.get('tenant'), key, c.req.valid('param').uploadId)
        const urls = await s3(() => Promise.all(partNumbers.map((n) => presigner.partUrl(upload.key, upload.uploadId!, n))))
        return c.json({ presignedUrls: Object.fromEntries(partNumbers.map((n, i) => [String(n), urls[i]!])) }, 200)
      })

      .get('/s3/multipart/:uploadId/:partNumber', partDoc, param(PartParams, 404), query(KeyQuery), async (c) => {
        const { uploadId, partNumber } = c.req.valid('param')
        const upload = await owned(c.get('tenant'), c.req.valid('query').key, uploadId)
        return c.json({ url: await s3(() => presigner.partUrl(upload.key, uploadId, partNumber)), expires: PRESIGNED_SECONDS }, 200)
      })

      .post('/s3/multipart/:uploadId/complete', completeMultipartDoc, param(UploadParams, 404), query(KeyQuery), json(CompleteBody), async (c) => {
        const upload = await owned(c.get('tenant'), c.req.valid('query').key, c.req.valid('param').uploadId)
        const parts: UploadedPart[] = c.req.valid('json').parts
        const fingerprint = fingerprintOf(upload.key, parts)
        const { accepted: answer, replayed } = await withKey(c.get('tenant'), c.req.header(IDEMPOTENCY_KEY), fingerprint, async () => {
          if (!upload.mediaId) await s3(() => presigner.completeMultipart(upload.key, upload.uploadId!, parts))
          return admit(upload, c.var)
        })
        const location = `${new URL(c.req.url).origin}/v1/media/${answer.id}`
        c.header('Location', location)
        if (replayed) c.header('Idempotent-Replayed', 'true')
        return c.json({ location, key: upload.key, bucket: deps.s3.bucket, ...answer }, 200)
      })

      .delete('/s3/multipart/:uploadId', abortDoc, param(UploadParams, 404), query(KeyQuery), async (c) => {
        const upload = await owned(c.get('tenant'), c.req.valid('query').key, c.req.valid('param').uploadId)
        if (upload.mediaId) throw new ApiError(409, 'conflict', 'this upload was completed; delete its media instead')
        await s3(() => presigner.abortMultipart(upload.key, upload.uploadId!))
        await store.deleteDirectUpload(upload.key)
        return c.json({}, 200)
      })
  )
}

/**
 * An S3 call on the client's behalf: S3's own refusal of what the client sent (a wrong ETag, an unknown upload) is a
 * 400 or 404 naming it; anything else is S3 being unavailable (503).
 */
async function s3<T>(call: () => Promise<T>): Promise<Awaited<T>> {
  try {
    return await call()
  } catch (error) {
    if (error instanceof ApiError) throw error
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode
    const name = (error as Error).name
    if (status === 404 || name === 'NoSuchUpload') throw new ApiError(404, 'not_found', `S3 has no such upload (${name})`)
    if (status === 400) throw new ApiError(400, 'bad_request', `S3 refused the request: ${name}: ${(error as Error).message}`)
    // s3rver (the embedded store) has no ListParts: say so rather than call S3 unavailable.
    if (status === 405 || status === 501) throw new ApiError(501, 'not_supported', `this S3 store does not support the operation (${name}); use AWS S3, MinIO or another complete implementation`)
    throw new ApiError(503, 'storage_unavailable', 'S3 could not be reached; try again shortly', { 'Retry-After': '5' })
  }
}

const KEY_DESCRIPTION =
  'Every answer names the upload\'s `key` (`<system>/originals/<media id>`, its original\'s key); later calls pass it as `?key=`. A single PUT goes to a staging object, which completion copies to the original: nothing written through the URL afterwards reaches the media.'
const paramsDoc = doc({
  operationId: 'directUploadParams',
  summary: 'A presigned URL to PUT one file to S3 (Uppy Companion\'s /s3/params)',
  description: `Upload the file with \`PUT url\` and the \`headers\` given, then call POST /v1/direct-uploads/complete?key=. ${KEY_DESCRIPTION}`,
  responses: { 200: jsonAnswer('Where and how to PUT the file.', v.object({ method: v.literal('PUT'), url: v.string(), fields: v.object({}), headers: v.record(v.string(), v.string()), expires: v.number(), key: v.string() })) },
  errors: [400],
})
const completeDoc = doc({
  operationId: 'completeDirectUpload',
  summary: 'Tell the API a single PUT is done: it becomes a media and its job',
  description: 'The object is checked as an upload is (size against MAX_UPLOAD_BYTES, kind from its first bytes); a refused one is deleted. Completing it again answers the same media. Takes an Idempotency-Key.',
  responses: { 202: jsonAnswer('The media, and its job queued.', AcceptedSchema) },
  errors: [400, 404, 409, 413, 415, 422, 503],
})
const createMultipartDoc = doc({
  operationId: 'createMultipartUpload',
  summary: 'Start a multipart upload to S3 (Companion\'s POST /s3/multipart)',
  responses: { 200: jsonAnswer('The upload.', v.object({ key: v.string(), uploadId: v.string(), bucket: v.string() })) },
  errors: [400, 503],
})
const listPartsDoc = doc({
  operationId: 'listMultipartParts',
  summary: 'The parts uploaded so far',
  responses: { 200: jsonAnswer('The parts.', v.array(v.object({ PartNumber: v.number(), ETag: v.string(), Size: v.optional(v.number()) }))) },
  errors: [400, 404, 503],
})
const batchDoc = doc({
  operationId: 'signMultipartParts',
  summary: 'Presigned URLs for a batch of parts',
  responses: { 200: jsonAnswer('A URL per part number.', v.object({ presignedUrls: v.record(v.string(), v.string()) })) },
  errors: [400, 404, 503],
})
const partDoc = doc({
  operationId: 'signMultipartPart',
  summary: 'A presigned URL for one part',
  responses: { 200: jsonAnswer('Where to PUT the part (its ETag answer header goes into the completion).', v.object({ url: v.string(), expires: v.number() })) },
  errors: [400, 404, 503],
})
const completeMultipartDoc = doc({
  operationId: 'completeMultipartUpload',
  summary: 'Join the parts; the object becomes a media and its job',
  description: 'As POST /complete, after S3 joins the parts. Answers Companion\'s `{location, key, bucket}` with the media\'s id and job. Takes an Idempotency-Key.',
  responses: {
    200: jsonAnswer('The media, and its job queued.', v.object({ location: v.string(), key: v.string(), bucket: v.string(), ...v.object(AcceptedSchema.entries).entries })),
  },
  errors: [400, 404, 409, 413, 415, 422, 503],
})
const abortDoc = doc({
  operationId: 'abortMultipartUpload',
  summary: 'Abort a multipart upload; its parts are deleted',
  responses: { 200: jsonAnswer('Aborted.', v.object({})) },
  errors: [400, 404, 409, 503],
})

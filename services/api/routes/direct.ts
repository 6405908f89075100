/**
 * `/v1/direct-uploads`: the client uploads straight to S3 with presigned URLs and tells the API when it is done
 * (uploads/direct.ts). The routes are shaped as Uppy's Companion serves them (`/s3/params`, `/s3/multipart/…`), so a
 * browser using @uppy/aws-s3 points its `endpoint` here and needs no code of its own; a single PUT is completed with
 * `POST /complete?key=`. Another tenant's key, or one never handed out, answers 404.
 */
import { Hono } from 'hono'
import { createHash } from 'node:crypto'
import * as v from 'valibot'
import type { Caller, Keyed } from '../auth/access.ts'
import { AcceptedSchema, PrioritySchema, type Accepted } from '../http/bodies.ts'
import { askedClass } from '../jobs/priority.ts'
import { API_KEY, documenter, jsonAnswer } from '../http/openapi.ts'
import { json, param, query } from '../http/validate.ts'
import { PRESIGNED_SECONDS, type UploadedPart } from '../s3/uploads.ts'
import type { DirectUploads } from '../uploads/direct.ts'
import { IDEMPOTENCY_KEY, idempotently } from '../uploads/idempotency.ts'
import { PresetArraySchema } from '../uploads/presets.ts'
import type { IdempotencyRepo } from '../store/uploads.ts'

const Text = (max: number) => v.pipe(v.string(), v.maxLength(max))
const KeyQuery = v.object({ key: Text(512) })
const ParamsQuery = v.object({ filename: v.optional(Text(1024)), type: v.optional(Text(255)) })
const MultipartBody = v.object({
  filename: v.optional(Text(1024)),
  type: v.optional(Text(255)),
  metadata: v.optional(v.record(v.string(), v.unknown())),
})
const UploadParams = v.object({ uploadId: v.pipe(v.string(), v.minLength(1), v.maxLength(1024)) })
const PartNumber = v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(10_000))
const PartParams = v.object({
  ...UploadParams.entries,
  partNumber: v.pipe(v.string(), v.regex(/^\d{1,5}$/, 'must be a part number'), v.transform(Number), PartNumber),
})
const BatchQuery = v.object({
  ...KeyQuery.entries,
  partNumbers: v.pipe(
    v.string(),
    v.regex(/^\d{1,5}(,\d{1,5}){0,999}$/, 'must be part numbers, comma-separated, such as 1,2,3'),
    v.transform((s) => s.split(',').map(Number)),
    v.array(PartNumber)
  ),
})
/** The presets the media is made with (the tenant's defaults when absent). */
const Presets = v.optional(
  v.pipe(PresetArraySchema, v.description("The presets to make (the tenant's defaults when absent)."))
)
/** A single PUT's completion may name presets (no body: the tenant's defaults). */
/** The class of the media's job (jobs/priority.ts): interactive unless asked, or the key or the tenant's backlog says bulk. */
const Priority = v.optional(PrioritySchema)
const CompleteSingleBody = v.object({ presets: Presets, priority: Priority })
const CompleteBody = v.object({
  presets: Presets,
  priority: Priority,
  parts: v.pipe(
    v.array(v.object({ PartNumber, ETag: Text(256) })),
    v.minLength(1, 'must list the uploaded parts'),
    v.maxLength(10_000)
  ),
})

const doc = documenter({ tag: 'media', security: API_KEY, errors: [401, 429] })

export interface DirectRouteDeps {
  direct: DirectUploads
  idempotency: IdempotencyRepo
  bucket: string
}

export function directRoutes(deps: DirectRouteDeps, keyed: Keyed) {
  const { direct } = deps
  /** A completion under its Idempotency-Key: a retry gets the first answer (the same key with other parts: 422). */
  const completing = async (
    tenant: string,
    header: string | undefined,
    fingerprint: string,
    complete: () => Promise<Accepted>
  ) => {
    const outcome = await idempotently<Accepted>(deps.idempotency, tenant, header, async (retry) => {
      if (retry) return { replayed: retry.replay(fingerprint) }
      const accepted = await complete()
      return { created: accepted, fingerprint, location: `/v1/media/${accepted.id}` }
    })
    return 'created' in outcome
      ? { accepted: outcome.created, replayed: false }
      : { accepted: outcome.replayed.body as Accepted, replayed: true }
  }
  const fingerprintOf = (...parts: unknown[]) => createHash('sha256').update(JSON.stringify(parts)).digest('hex')

  return (
    new Hono<Caller>()
      .use('*', keyed)

      /** A single presigned PUT (Companion's `GET /s3/params`, PUT flavour). */
      .get('/s3/params', paramsDoc, query(ParamsQuery), async (c) => {
        const { filename, type } = c.req.valid('query')
        const { upload, url } = await direct.presignPut(c.get('tenant'), filename, type)
        return c.json(
          {
            method: 'PUT' as const,
            url,
            fields: {},
            headers: type ? { 'content-type': type } : {},
            expires: PRESIGNED_SECONDS,
            key: upload.key,
          },
          200
        )
      })

      /** Tells the API a single PUT is done. */
      .post('/complete', completeDoc, query(KeyQuery), json(CompleteSingleBody), async (c) => {
        const upload = await direct.owned(c.get('tenant'), c.req.valid('query').key)
        const { presets = null, priority } = c.req.valid('json')
        const asked = askedClass(priority, c.get('keyPriority'))
        const { accepted, replayed } = await completing(
          c.get('tenant'),
          c.req.header(IDEMPOTENCY_KEY),
          fingerprintOf(upload.key, presets),
          () => direct.complete(upload, c.var, { presets, asked })
        )
        c.header('Location', `/v1/media/${accepted.id}`)
        if (replayed) c.header('Idempotent-Replayed', 'true')
        return c.json(accepted, 202)
      })

      .post('/s3/multipart', createMultipartDoc, json(MultipartBody), async (c) => {
        const { filename, type } = c.req.valid('json')
        const upload = await direct.startMultipart(c.get('tenant'), filename, type)
        return c.json({ key: upload.key, uploadId: upload.uploadId!, bucket: deps.bucket }, 200)
      })

      .get('/s3/multipart/:uploadId', listPartsDoc, param(UploadParams, 404), query(KeyQuery), async (c) => {
        const upload = await direct.owned(c.get('tenant'), c.req.valid('query').key, c.req.valid('param').uploadId)
        return c.json(await direct.listParts(upload), 200)
      })

      .get('/s3/multipart/:uploadId/batch', batchDoc, param(UploadParams, 404), query(BatchQuery), async (c) => {
        const { key, partNumbers } = c.req.valid('query')
        const upload = await direct.owned(c.get('tenant'), key, c.req.valid('param').uploadId)
        const urls = await direct.presignParts(upload, partNumbers)
        return c.json({ presignedUrls: Object.fromEntries(partNumbers.map((n, i) => [String(n), urls[i]!])) }, 200)
      })

      .get('/s3/multipart/:uploadId/:partNumber', partDoc, param(PartParams, 404), query(KeyQuery), async (c) => {
        const { uploadId, partNumber } = c.req.valid('param')
        const upload = await direct.owned(c.get('tenant'), c.req.valid('query').key, uploadId)
        const [url] = await direct.presignParts(upload, [partNumber])
        return c.json({ url: url!, expires: PRESIGNED_SECONDS }, 200)
      })

      .post(
        '/s3/multipart/:uploadId/complete',
        completeMultipartDoc,
        param(UploadParams, 404),
        query(KeyQuery),
        json(CompleteBody),
        async (c) => {
          const upload = await direct.owned(c.get('tenant'), c.req.valid('query').key, c.req.valid('param').uploadId)
          const parts: UploadedPart[] = c.req.valid('json').parts
          const { presets = null, priority } = c.req.valid('json')
          const asked = askedClass(priority, c.get('keyPriority'))
          const { accepted, replayed } = await completing(
            c.get('tenant'),
            c.req.header(IDEMPOTENCY_KEY),
            fingerprintOf(upload.key, parts, presets),
            () => direct.completeMultipart(upload, parts, c.var, { presets, asked })
          )
          const location = `${new URL(c.req.url).origin}/v1/media/${accepted.id}`
          c.header('Location', location)
          if (replayed) c.header('Idempotent-Replayed', 'true')
          return c.json({ location, key: upload.key, bucket: deps.bucket, ...accepted }, 200)
        }
      )

      .delete('/s3/multipart/:uploadId', abortDoc, param(UploadParams, 404), query(KeyQuery), async (c) => {
        const upload = await direct.owned(c.get('tenant'), c.req.valid('query').key, c.req.valid('param').uploadId)
        await direct.abort(upload)
        return c.json({}, 200)
      })
  )
}

const KEY_DESCRIPTION =
  "Every answer names the upload's `key` (`<system>/originals/<media id>`, its original's key); later calls pass it as `?key=`. A single PUT goes to a staging object, which completion copies to the original: nothing written through the URL afterwards reaches the media."
const paramsDoc = doc({
  operationId: 'directUploadParams',
  summary: "A presigned URL to PUT one file to S3 (Uppy Companion's /s3/params)",
  description: `Upload the file with \`PUT url\` and the \`headers\` given, then call POST /v1/direct-uploads/complete?key=. ${KEY_DESCRIPTION}`,
  responses: {
    200: jsonAnswer(
      'Where and how to PUT the file.',
      v.object({
        method: v.literal('PUT'),
        url: v.string(),
        fields: v.object({}),
        headers: v.record(v.string(), v.string()),
        expires: v.number(),
        key: v.string(),
      })
    ),
  },
  errors: [400],
})
const completeDoc = doc({
  operationId: 'completeDirectUpload',
  summary: 'Tell the API a single PUT is done: it becomes a media and its job',
  description:
    'The object is checked as an upload is (size against MAX_UPLOAD_BYTES, kind from its first bytes); a refused one is deleted. Completing it again answers the same media. Takes an Idempotency-Key.',
  responses: { 202: jsonAnswer('The media, and its job queued.', AcceptedSchema) },
  errors: [400, 404, 409, 413, 415, 422, 503],
})
const createMultipartDoc = doc({
  operationId: 'createMultipartUpload',
  summary: "Start a multipart upload to S3 (Companion's POST /s3/multipart)",
  responses: {
    200: jsonAnswer('The upload.', v.object({ key: v.string(), uploadId: v.string(), bucket: v.string() })),
  },
  errors: [400, 503],
})
const listPartsDoc = doc({
  operationId: 'listMultipartParts',
  summary: 'The parts uploaded so far',
  responses: {
    200: jsonAnswer(
      'The parts.',
      v.array(v.object({ PartNumber: v.number(), ETag: v.string(), Size: v.optional(v.number()) }))
    ),
  },
  errors: [400, 404, 503],
})
const batchDoc = doc({
  operationId: 'signMultipartParts',
  summary: 'Presigned URLs for a batch of parts',
  responses: {
    200: jsonAnswer('A URL per part number.', v.object({ presignedUrls: v.record(v.string(), v.string()) })),
  },
  errors: [400, 404, 503],
})
const partDoc = doc({
  operationId: 'signMultipartPart',
  summary: 'A presigned URL for one part',
  responses: {
    200: jsonAnswer(
      'Where to PUT the part (its ETag answer header goes into the completion).',
      v.object({ url: v.string(), expires: v.number() })
    ),
  },
  errors: [400, 404, 503],
})
const completeMultipartDoc = doc({
  operationId: 'completeMultipartUpload',
  summary: 'Join the parts; the object becomes a media and its job',
  description:
    "As POST /complete, after S3 joins the parts. Answers Companion's `{location, key, bucket}` with the media's id and job. Takes an Idempotency-Key.",
  responses: {
    200: jsonAnswer(
      'The media, and its job queued.',
      v.object({
        location: v.string(),
        key: v.string(),
        bucket: v.string(),
        ...v.object(AcceptedSchema.entries).entries,
      })
    ),
  },
  errors: [400, 404, 409, 413, 415, 422, 503],
})
const abortDoc = doc({
  operationId: 'abortMultipartUpload',
  summary: 'Abort a multipart upload; its parts are deleted',
  responses: { 200: jsonAnswer('Aborted.', v.object({})) },
  errors: [400, 404, 409, 503],
})

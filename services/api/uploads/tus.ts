/**
 * Resumable uploads (tus 1.0) on `@tus/server`, writing straight into an S3 multipart upload (`@tus/s3-store`). It
 * needs a store that answers ListParts: AWS S3, MinIO, moto, and the embedded store (infra/store). On one that does
 * not, every tus request is a 501 naming the other ways to upload.
 *
 * - The upload's S3 key is its media's original (`<system>/originals/<media id>`); its URL is `/v1/uploads/<media
 *   id>` (tus ids may not hold a slash, so the URL carries the media id and the key is rebuilt from it).
 * - Each upload is recorded with its tenant when it is created (the `direct_uploads` table); every later request
 *   must come from that tenant.
 * - One request at a time per upload, across every API instance: a lock on the database (store leases).
 * - When the last byte arrives, the original is judged from its first bytes and becomes a media and its job,
 *   exactly as a POST upload does (`admitMedia`). Unfinished uploads expire after a day; `cleanUp` aborts them.
 */
import { S3Store } from '@tus/s3-store'
import { ERRORS, Server, type KvStore, type Lock, type Locker, type RequestRelease } from '@tus/server'
import { JobClassSchema, classifyS3Error, s3ClientOptions, type JobClass, type TraceContext } from '@app/shared'
import type { Logger } from '@app/shared/ops'
import type { Config } from '../config.ts'
import { ApiError } from '../http/errors.ts'
import type { S3Uploads } from '../s3/uploads.ts'
import type { CoordinationRepo } from '../store/coordination.ts'
import * as v from 'valibot'
import { askedClass } from '../jobs/priority.ts'
import { admitStored, type AdmitDeps } from './admit.ts'
import { readHead, withHead } from './first-bytes.ts'
import { originalKey } from './object-keys.ts'
import { PresetListSchema, type Chosen, type Presets } from './presets.ts'
import { checkQuota, declaredLength } from './quota.ts'
import { judgeHead } from './rules.ts'

/** Where tus answers (the Hono routes mount here too). */
export const TUS_PATH = '/v1/uploads'
/** An unfinished upload is kept this long, then aborted by `cleanUp`. */
const EXPIRE_MS = 24 * 3_600_000
/** A lock is held this long unless renewed; its holder renews it while it writes. */
const LOCK_MS = 30_000

/** Who is asking, for the hooks of the request being handled (tus hands the hooks the same Request). */
export interface TusCaller {
  tenant: string
  /** The class of the key's uploads (a bulk key's are bulk). */
  keyPriority: JobClass
  trace: TraceContext
  log: Logger
}

/** A request's caller, and (for an upload being created) the presets and class its metadata names. */
interface Handling extends TusCaller {
  presets: string[] | null
  asked: JobClass | null
}

export interface TusDeps extends AdmitDeps {
  s3Uploads: S3Uploads
  presets: Presets
  s3: Config['s3']
  maxUploadBytes: number
  instanceId: string
  corsOrigins: readonly string[]
}

export function createTus(deps: TusDeps) {
  const callers = new WeakMap<Request, Handling>()
  const supportsListParts = listPartsProbe(deps.s3Uploads)
  const keyOf = (mediaId: string) => originalKey(deps.system, mediaId)
  const mediaIdOf = (key: string) => key.slice(key.lastIndexOf('/') + 1)

  const server = new Server({
    path: TUS_PATH,
    datastore: new S3Store({
      partSize: 8 * 1024 * 1024,
      s3ClientConfig: { ...s3ClientOptions(deps.s3), bucket: deps.s3.bucket },
      // Upload info is read from S3 each time: a per-process cache would go stale across instances.
      cache: noCache(),
      expirationPeriodInMilliseconds: EXPIRE_MS,
      // Tags are for an S3 lifecycle rule; `cleanUp` does the same without asking every store to support tagging.
      useTags: false,
    }),
    locker: leaseLocker(deps.store.coordination, deps.instanceId),
    maxSize: deps.maxUploadBytes,
    // A finished upload is its media's original: a late termination (a client aborting as it finishes) must not
    // remove it, whatever the S3 store would answer to aborting a completed multipart upload.
    disableTerminationForFinishedUploads: true,
    relativeLocation: true,
    allowedOrigins: deps.corsOrigins.includes('*') ? undefined : [...deps.corsOrigins],
    exposedHeaders: ['X-Media-Id'],
    namingFunction: () => keyOf(crypto.randomUUID()),
    generateUrl: (_req, { path, id }) => `${path}/${mediaIdOf(id)}`,
    getFileIdFromRequest: (_req, lastPath) =>
      lastPath && /^[0-9a-f-]{36}$/.test(lastPath) ? keyOf(lastPath) : undefined,
    async onUploadCreate(req, upload) {
      const caller = callers.get(req)
      if (!caller) throw { status_code: 500, body: 'no caller' }
      const filename = upload.metadata?.filename ?? upload.metadata?.name ?? null
      await deps.store.uploads.record({
        key: upload.id,
        id: mediaIdOf(upload.id),
        tenant: caller.tenant,
        uploadId: 'tus',
        filename,
        mediaId: null,
        createdAt: Date.now(),
        presets: caller.presets,
        priority: caller.asked,
      })
      return {}
    },
    async onUploadFinish(req, upload) {
      const caller = callers.get(req)
      const record = await deps.store.uploads.get(upload.id)
      if (!caller || !record)
        throw { status_code: 404, body: errorBody(new ApiError(404, 'not_found', 'no such upload')) }
      try {
        // Judged again as a whole (a first PATCH too short to judge passed): refused, nothing of it is kept.
        const accepted = await admitStored(deps, record, caller, {
          size: upload.size ?? upload.offset,
          alsoRemove: [`${upload.id}.info`],
          chosen: await deps.presets.choose(record.tenant, record.presets ?? null),
          asked: record.priority ?? null,
        })
        return { headers: { 'X-Media-Id': accepted.id } }
      } catch (error) {
        if (!(error instanceof ApiError)) throw error
        throw { status_code: error.status, body: errorBody(error) }
      }
    },
  })

  return {
    /**
     * Answers one tus request of `caller`. Requests on an upload must come from its tenant (404 otherwise, as for an
     * upload that does not exist). The first bytes of an upload (its creation-with-upload, or the PATCH at its real
     * offset 0) are judged before anything is stored: a refused kind is answered 415 at once and the upload removed.
     */
    async handle(request: Request, caller: TusCaller): Promise<Response> {
      if (!(await supportsListParts())) {
        throw new ApiError(
          501,
          'not_supported',
          'resumable uploads need an S3 store with ListParts (AWS S3, MinIO, the embedded store), which this one lacks: use POST /v1/media or a direct upload'
        )
      }
      const last = new URL(request.url).pathname.slice(TUS_PATH.length).replace(/^\//, '')
      let presets: string[] | null = null
      let asked: JobClass | null = null
      if (last && request.method !== 'OPTIONS') {
        const record = /^[0-9a-f-]{36}$/.test(last) ? await deps.store.uploads.get(keyOf(last)) : undefined
        if (!record || record.tenant !== caller.tenant || record.uploadId !== 'tus')
          throw new ApiError(404, 'not_found', `no upload ${last} of this API key's tenant`)
        presets = record.presets ?? null
      } else if (request.method === 'POST') {
        presets = presetsOf(request.headers.get('upload-metadata'))
        asked = askedClass(priorityOf(request.headers.get('upload-metadata')), caller.keyPriority)
        // An upload is made only within the tenant's quota, judged on its declared length.
        await checkQuota(deps.store.quotas, caller.tenant, declaredLength(request.headers.get('upload-length')))
      }
      // Unknown presets are refused before the upload is made; presets not for its kind, on its first bytes.
      const chosen = request.method === 'OPTIONS' ? null : await deps.presets.choose(caller.tenant, presets)
      // A PATCH claiming offset 0 is judged only if the upload really is at 0. At any other offset tus answers 409
      // and changes nothing (tus 1.0): a wrong offset must never cost the client an upload it has half sent.
      // (Unknown when the store cannot say: then it is judged, and nothing is removed on a refusal.)
      const claimsStart = request.method === 'PATCH' && request.headers.get('upload-offset') === '0'
      const offset = claimsStart
        ? await server.datastore.getUpload(keyOf(last)).then(
            (upload) => upload.offset,
            () => null
          )
        : null
      const judged =
        claimsStart && offset !== null && offset !== 0 ? request : await judgeFirstBytes(request, last, chosen)
      if (judged instanceof ApiError) {
        if (last && offset === 0) {
          await server.datastore.remove(keyOf(last)).catch(() => {})
          await deps.store.uploads.remove(keyOf(last))
        }
        throw judged
      }
      callers.set(judged, { ...caller, presets, asked })
      return server.handleWeb(judged)
    },
    /** Aborts unfinished uploads past their day (run by one instance at a time). */
    cleanUp: () => server.cleanUpExpiredUploads(),
  }
}
export type Tus = ReturnType<typeof createTus>

/**
 * The request with its first bytes read and judged, when it carries an upload's beginning (a POST with a body, or
 * a PATCH at offset 0): an ApiError (415) for a refused kind, else the same request with the bytes put back.
 */
async function judgeFirstBytes(
  request: Request,
  uploadPath: string,
  chosen: Chosen | null
): Promise<Request | ApiError> {
  const starts =
    (request.method === 'POST' && !uploadPath && request.body) ||
    (request.method === 'PATCH' && request.headers.get('upload-offset') === '0')
  if (!starts || !request.body) return request
  const reader = request.body.getReader()
  const { head, ended } = await readHead(reader)
  if (head.byteLength > 0) {
    try {
      chosen?.recipeFor(judgeHead(head).kind)
    } catch (error) {
      await reader.cancel().catch(() => {})
      return error as ApiError
    }
  }
  const body = withHead(head, ended ? null : reader)
  return new Request(request.url, {
    method: request.method,
    headers: request.headers,
    body,
    duplex: 'half',
  } as RequestInit)
}

const errorBody = (error: ApiError) => JSON.stringify(error.toJSON())

/**
 * The presets an upload's `Upload-Metadata` names (`presets`, comma-separated), or null when it names none; 400 when
 * the value is not a list of preset names. (Metadata is `key base64value` pairs, comma-separated: tus 1.0.)
 */
function presetsOf(metadata: string | null): string[] | null {
  return metadataValue(metadata, 'presets', PresetListSchema)
}

/** The class an upload's `Upload-Metadata` asks for (`priority`: interactive or bulk), or null; 400 when another. */
function priorityOf(metadata: string | null): JobClass | null {
  return metadataValue(metadata, 'priority', JobClassSchema)
}

/** One `Upload-Metadata` value (base64, as tus sends them) parsed by `schema`, or null when absent; 400 when bad. */
function metadataValue<T>(metadata: string | null, name: string, schema: v.GenericSchema<string, T>): T | null {
  for (const pair of (metadata ?? '').split(',')) {
    const [key, value] = pair.trim().split(' ')
    if (key !== name) continue
    const parsed = v.safeParse(schema, value ? Buffer.from(value, 'base64').toString('utf8') : '')
    if (!parsed.success) throw new ApiError(400, 'bad_request', `Upload-Metadata ${name} ${parsed.issues[0].message}`)
    return parsed.output
  }
  return null
}

/**
 * Whether the store answers ListParts (some S3-compatible servers do not), asked once per API: a real store says NoSuchUpload (404)
 * for an upload that does not exist; one without the call says MethodNotAllowed (405) or NotImplemented (501).
 */
function listPartsProbe(s3: Pick<S3Uploads, 'listParts'>): () => Promise<boolean> {
  let answer: Promise<boolean> | undefined
  return () => {
    answer ??= s3.listParts('tus-probe', 'no-such-upload').then(
      () => true,
      (error) => {
        const { kind } = classifyS3Error(error)
        if (kind === 'unsupported') return false
        if (kind !== 'missing') answer = undefined // an outage, not an answer: ask again next time
        return true
      }
    )
    return answer
  }
}

/** A KvStore that keeps nothing: the S3 store then reads each upload's info from S3. */
function noCache<T>(): KvStore<T> {
  return { get: async () => undefined, set: async () => {}, delete: async () => {}, list: async () => [] }
}

/**
 * tus's Locker over the store's leases: one holder per upload across instances. A lock is renewed while held; a
 * request that died without unlocking frees it after LOCK_MS. Within this process, a second request asks the
 * holder to let go (tus's `requestRelease`), as the default in-memory locker does.
 */
function leaseLocker(leases: Pick<CoordinationRepo, 'claimLease' | 'releaseLease'>, instanceId: string): Locker {
  const holders = new Map<string, RequestRelease>()
  return {
    newLock(id: string): Lock {
      const name = `tus:${id}`
      const holder = `${instanceId}:${crypto.randomUUID()}`
      let renew: ReturnType<typeof setInterval> | undefined
      return {
        async lock(signal, requestRelease) {
          for (;;) {
            if (await leases.claimLease(name, holder, LOCK_MS)) {
              holders.set(name, requestRelease)
              renew = setInterval(() => void leases.claimLease(name, holder, LOCK_MS).catch(() => {}), LOCK_MS / 3)
              return
            }
            await holders.get(name)?.()
            if (signal.aborted) throw ERRORS.ERR_LOCK_TIMEOUT
            await new Promise((resolve) => setTimeout(resolve, 100))
          }
        },
        async unlock() {
          clearInterval(renew)
          if (holders.get(name)) holders.delete(name)
          await leases.releaseLease(name, holder)
        },
      }
    },
  }
}

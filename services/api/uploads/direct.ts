/**
 * Direct uploads to S3: the client uploads with presigned URLs and tells the API when it is done. Every upload handed
 * out is recorded with its tenant; only that tenant may go on with it. A single PUT goes to a staging key, which
 * completion copies to the original's key (no URL can write that one, so a PUT after completion changes nothing a
 * job reads); a multipart upload is joined by the API itself, after which its part URLs meet a finished upload.
 * Either way the original is then judged and admitted as tus uploads are (admit.ts `admitStored`).
 */
import type { JobClass } from '@app/shared'
import type { Accepted } from '../http/bodies.ts'
import { ApiError } from '../http/errors.ts'
import { onClientsBehalf } from '../s3/answers.ts'
import type { S3Uploads, UploadedPart } from '../s3/uploads.ts'
import type { DirectUpload } from '../store/uploads.ts'
import { admitStored, type AdmitDeps, type Uploader } from './admit.ts'
import type { Chosen, Presets } from './presets.ts'
import { sanitizeFilename } from './filename.ts'
import { originalKey, stagingKey } from './object-keys.ts'
import { checkQuota, quotaError } from './quota.ts'
import { tooLarge } from './rules.ts'

/** How long a completion holds its upload (another completion of it meanwhile gets 409). */
const COMPLETION_LEASE_MS = 60_000

/** What a completion asks for: presets (null: the tenant's defaults), and a class (null: decided at admission). */
export interface Wanted {
  presets: string[] | null
  asked: JobClass | null
}

export type DirectUploads = ReturnType<typeof createDirectUploads>

export interface DirectDeps extends AdmitDeps {
  s3Uploads: S3Uploads
  presets: Presets
  maxUploadBytes: number
  /** This instance: the holder of the leases it takes. */
  instanceId: string
}

export function createDirectUploads(deps: DirectDeps) {
  const { store, s3Uploads } = deps

  /** Records a new upload for `tenant`: the media id it becomes, and its object key. */
  const handOut = async (
    tenant: string,
    filename: string | undefined,
    uploadId: string | null,
    id = crypto.randomUUID()
  ): Promise<DirectUpload> => {
    const upload = {
      key: originalKey(deps.system, id),
      id,
      tenant,
      uploadId,
      filename: filename ? sanitizeFilename(filename) : null,
      mediaId: null,
      createdAt: Date.now(),
    }
    await store.uploads.record(upload)
    return upload
  }

  /** The media a completed upload became, as its completion answered. */
  const answerOf = async (mediaId: string): Promise<Accepted> => {
    const media = await store.media.get(mediaId)
    if (!media) throw new ApiError(404, 'not_found', `media ${mediaId} of this upload was deleted`)
    return { id: media.id, jobId: media.jobId, kind: media.kind, status: 'queued', priority: media.cls }
  }

  /**
   * Completes an upload once: its media, made now or by an earlier completion. Two completions at once: one waits
   * its turn (409). `join` runs first for an upload not yet completed (the staging copy, or the multipart join).
   */
  const completeOnce = async (
    upload: DirectUpload,
    uploader: Uploader,
    wanted: Wanted,
    join: () => Promise<string[]>
  ): Promise<Accepted> => {
    if (upload.mediaId) return answerOf(upload.mediaId)
    // Unknown presets are refused before anything is joined or copied.
    const chosen: Chosen = await deps.presets.choose(upload.tenant, wanted.presets)
    const lease = `direct:${upload.key}`
    const holder = `${deps.instanceId}:${crypto.randomUUID()}`
    if (!(await store.coordination.claimLease(lease, holder, COMPLETION_LEASE_MS)))
      throw new ApiError(409, 'conflict', 'this upload is being completed by another request')
    try {
      const again = await store.uploads.get(upload.key)
      if (again?.mediaId) return answerOf(again.mediaId)
      const alsoRemove = await join()
      const accepted = await admitStored(deps, upload, uploader, { alsoRemove, chosen, asked: wanted.asked })
      // The staging object is not needed any more (the upload sweep removes it if this fails, or if its URL writes it again).
      for (const key of alsoRemove) await deps.objects.remove(key).catch(() => {})
      return accepted
    } finally {
      await store.coordination.releaseLease(lease, holder)
    }
  }

  return {
    /** The caller's upload at `key` (of that multipart upload, when given); 404 otherwise. */
    async owned(tenant: string, key: string, uploadId?: string): Promise<DirectUpload> {
      const upload = await store.uploads.get(key)
      if (!upload || upload.tenant !== tenant || (uploadId !== undefined && upload.uploadId !== uploadId)) {
        throw new ApiError(404, 'not_found', `no direct upload ${uploadId ?? key} of this API key's tenant`)
      }
      return upload
    },
    /** A single presigned PUT: the upload, and the URL that writes its staging object. */
    async presignPut(tenant: string, filename: string | undefined, contentType: string | undefined) {
      await checkQuota(store.quotas, tenant, null)
      const upload = await handOut(tenant, filename, null)
      return {
        upload,
        url: await onClientsBehalf(() => s3Uploads.presignPut(stagingKey(deps.system, upload.id), contentType)),
      }
    },
    /** A single PUT is done: its staging object is copied to the original, which is judged and admitted. */
    complete: (upload: DirectUpload, uploader: Uploader, wanted: Wanted) =>
      completeOnce(upload, uploader, wanted, async () => {
        const staged = stagingKey(deps.system, upload.id)
        const size = await onClientsBehalf(() => deps.objects.size(staged))
        if (size === null) throw new ApiError(409, 'conflict', `nothing has been uploaded to ${upload.key} yet`)
        // Not copied at all when too large already (admitStored judges the copy again, in case it changed
        // meanwhile), or past the tenant's quota: the staged bytes never become an original.
        const refusal =
          size > deps.maxUploadBytes
            ? tooLarge(deps.maxUploadBytes)
            : await quotaError(store.quotas, upload.tenant, size)
        if (refusal) {
          await onClientsBehalf(() => deps.objects.remove(staged))
          await store.uploads.remove(upload.key)
          throw refusal
        }
        await onClientsBehalf(() => deps.objects.copy(staged, upload.key))
        return [staged]
      }),
    async startMultipart(
      tenant: string,
      filename: string | undefined,
      contentType: string | undefined
    ): Promise<DirectUpload> {
      await checkQuota(store.quotas, tenant, null)
      const id = crypto.randomUUID()
      const uploadId = await onClientsBehalf(() => s3Uploads.createMultipart(originalKey(deps.system, id), contentType))
      return handOut(tenant, filename, uploadId, id)
    },
    listParts: (upload: DirectUpload) => onClientsBehalf(() => s3Uploads.listParts(upload.key, upload.uploadId!)),
    presignParts: (upload: DirectUpload, partNumbers: number[]) =>
      onClientsBehalf(() =>
        Promise.all(partNumbers.map((n) => s3Uploads.presignPart(upload.key, upload.uploadId!, n)))
      ),
    /** The parts are joined (by the API: the client holds no URL that can), and the original judged and admitted. */
    completeMultipart: (upload: DirectUpload, parts: UploadedPart[], uploader: Uploader, wanted: Wanted) =>
      completeOnce(upload, uploader, wanted, async () => {
        await onClientsBehalf(() => s3Uploads.completeMultipart(upload.key, upload.uploadId!, parts))
        return []
      }),
    async abort(upload: DirectUpload): Promise<void> {
      if (upload.mediaId) throw new ApiError(409, 'conflict', 'this upload was completed; delete its media instead')
      await onClientsBehalf(() => s3Uploads.abortMultipart(upload.key, upload.uploadId!))
      await store.uploads.remove(upload.key)
    },
  }
}

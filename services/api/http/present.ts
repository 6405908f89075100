/** The public shape of a media record: what GET /v1/media/:id answers, and what a webhook's `data` holds. */
import { parseTraceparent } from '@app/shared'
import type { Media } from './bodies.ts'
import type { MediaRecord } from '../store/media.ts'

/** The media as clients see it; its outputs' URLs are on `origin` (the request's, or PUBLIC_URL). */
export function present(media: MediaRecord, origin: string): Media {
  return {
    id: media.id,
    jobId: media.jobId,
    kind: media.kind,
    filename: media.filename,
    format: media.format,
    size: media.size,
    status: media.status,
    stage: media.stage,
    progress: media.progress,
    etaSeconds: media.etaSeconds,
    error: media.error,
    metadata: media.metadata,
    outputs: media.outputs.map((o) => ({
      name: o.name,
      contentType: o.contentType,
      size: o.size,
      width: o.width,
      height: o.height,
      ...(o.durationSeconds !== undefined ? { durationSeconds: o.durationSeconds } : {}),
      url: `${origin}/v1/media/${media.id}/outputs/${encodeURIComponent(o.name)}`,
    })),
    traceId: parseTraceparent(media.traceparent)?.traceId ?? null,
    createdAt: media.createdAt,
    updatedAt: media.updatedAt,
  }
}

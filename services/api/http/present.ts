/** The public shape of a media record: what GET /v1/media/:id answers, and what a webhook's `data` holds. */
import { parseTraceparent } from '@app/shared'
import type { Media } from './bodies.ts'
import type { MediaRecord } from '../store/media.ts'

/** The media as clients see it; its outputs' URLs are on `origin` (the request's, or PUBLIC_URL). */
export function present(media: MediaRecord, origin: string): Media {
  const url = (name: string) => `${origin}/v1/media/${media.id}/outputs/${encodeURIComponent(name)}`
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
      ...(o.set ? { set: o.set } : {}),
      url: url(o.name),
    })),
    traceId: parseTraceparent(media.traceparent)?.traceId ?? null,
    presets: media.presets,
    priority: media.cls,
    srcsets: srcsets(media, url),
    reprocess: media.reprocess && {
      jobId: media.reprocess.jobId,
      status: media.reprocess.status,
      stage: media.reprocess.stage,
      progress: media.reprocess.progress,
      etaSeconds: media.reprocess.etaSeconds,
      error: media.reprocess.error,
      presets: media.reprocess.presets,
      priority: media.reprocess.cls,
    },
    createdAt: media.createdAt,
    updatedAt: media.updatedAt,
  }
}

/** Each responsive set of a media's outputs as an HTML `srcset`, narrowest first: `<url> <width>w, …`. */
function srcsets(media: MediaRecord, url: (name: string) => string): Record<string, string> {
  const sets: Record<string, { width: number; name: string }[]> = {}
  for (const o of media.outputs) if (o.set && o.width) (sets[o.set] ??= []).push({ width: o.width, name: o.name })
  return Object.fromEntries(
    Object.entries(sets).map(([set, outputs]) => [
      set,
      outputs
        .sort((a, b) => a.width - b.width)
        .map((o) => `${url(o.name)} ${o.width}w`)
        .join(', '),
    ])
  )
}

/**
 * An event as clients get it, on `/v1/events` (SSE) and `/v1/ws` alike: its number in the tenant's log (`id`), what
 * changed (`type`), the media's id and, unless it was deleted, the media as `GET /v1/media/:id` answers it.
 */
import * as v from 'valibot'
import { JOB_STATUSES, MEDIA_KIND_LIST, MediaIdSchema, type JobStatus, type MediaKind } from '@app/shared'
import { MediaSchema } from '../http/bodies.ts'
import { present } from '../http/present.ts'
import type { ChangeType, LoggedEvent } from '../store/events.ts'

export const CHANGE_TYPES = [
  'created',
  'queued',
  'processing',
  'completed',
  'failed',
  'cancelled',
  'reprocessing',
  'deleted',
] as const satisfies readonly ChangeType[]

export const EventSchema = v.pipe(
  v.object({
    id: v.pipe(
      v.number(),
      v.description("The event's number in the tenant's log: increasing, one per change; resume after it.")
    ),
    type: v.pipe(
      v.picklist(CHANGE_TYPES),
      v.description('What the change left: the media created, its status, a reprocess running, or the media deleted.')
    ),
    mediaId: MediaIdSchema,
    media: v.pipe(v.nullable(MediaSchema), v.description('The media after the change; null once deleted.')),
    at: v.pipe(v.string(), v.description('When the change was applied (RFC 3339).')),
  }),
  v.metadata({ ref: 'MediaEvent' })
)
export type ClientEvent = v.InferOutput<typeof EventSchema>

/** The event as clients see it, its outputs' URLs on `origin`. */
export function toClient(event: LoggedEvent, origin: string): ClientEvent {
  return {
    id: event.seq,
    type: event.type,
    mediaId: event.mediaId,
    media: event.media ? present(event.media, origin) : null,
    at: event.at,
  }
}

/**
 * The event as JSON for clients on `origin`: made once per event and origin, however many streams and sockets get it
 * (the hub hands every follower the same event object).
 */
const made = new WeakMap<LoggedEvent, Map<string, string>>()
export function eventJson(event: LoggedEvent, origin: string): string {
  let byOrigin = made.get(event)
  if (!byOrigin) made.set(event, (byOrigin = new Map()))
  let json = byOrigin.get(origin)
  if (json === undefined) byOrigin.set(origin, (json = JSON.stringify(toClient(event, origin))))
  return json
}

/** Which events a follower wants: of these kinds, statuses and media (each unset: all). */
export interface EventFilter {
  kinds?: ReadonlySet<MediaKind>
  statuses?: ReadonlySet<JobStatus>
  media?: ReadonlySet<string>
}

/**
 * Whether the event passes the filter. A deletion carries no media, so it passes the kind and status filters (a
 * client filtering by kind ignores the id of a media it never had).
 */
export function passes(filter: EventFilter, event: LoggedEvent): boolean {
  if (filter.media && !filter.media.has(event.mediaId)) return false
  if (!event.media) return true
  if (filter.kinds && !filter.kinds.has(event.media.kind)) return false
  return !filter.statuses || filter.statuses.has(event.media.status)
}

const list = <T extends string>(options: readonly T[], what: string) =>
  v.pipe(
    v.string(),
    v.transform((s) => s.split(',').filter(Boolean)),
    v.array(v.picklist(options, `must be ${what}, comma-separated`)),
    v.transform((xs) => new Set(xs))
  )

/** `GET /v1/events`' query: filters, and where to resume. */
export const EventsQuery = v.object({
  kind: v.optional(v.pipe(list(MEDIA_KIND_LIST, 'kinds (image, video, audio)'), v.description('Only these kinds.'))),
  status: v.optional(v.pipe(list(JOB_STATUSES, 'job statuses'), v.description('Only media left in these statuses.'))),
  media: v.optional(
    v.pipe(
      v.string(),
      v.transform((s) => s.split(',').filter(Boolean)),
      v.array(MediaIdSchema),
      v.maxLength(1000, 'may name at most 1000 media'),
      v.transform((xs) => new Set(xs)),
      v.description('Only these media (ids, comma-separated).')
    )
  ),
  after: v.optional(
    v.pipe(
      v.string(),
      v.regex(/^\d{1,15}$/, 'must be an event id'),
      v.transform(Number),
      v.description('Resume after this event id (as Last-Event-ID does).')
    )
  ),
})

/**
 * The query of `GET /v1/media`: filters by status and kind, a page size, and an opaque cursor (keyset paging: the
 * creation time and id of the last media of the page before, so a page never skips or repeats a media however many
 * are added meanwhile).
 */
import * as v from 'valibot'
import { JOB_STATUSES, MEDIA_KIND_LIST, MediaIdSchema, type JobStatus } from '@app/shared'
import type { MediaKind, MediaQuery } from '../store/media.ts'

const LIMIT_RULE = 'must be a whole number from 1 to 100'
export const DEFAULT_PAGE = 24

/** A comma-separated list of `values`, each at most once, e.g. `queued,processing`. */
const listOf = <T extends string>(values: readonly T[], what: string) =>
  v.pipe(
    v.string(`must be a comma-separated list of ${what}`),
    v.transform((text) => [...new Set(text.split(',').map((item) => item.trim()))]),
    v.check(
      (items) => items.every((item) => (values as readonly string[]).includes(item)),
      `must be a comma-separated list of ${values.join(', ')}`
    ),
    v.transform((items) => items as T[])
  )

const CursorSchema = v.pipe(
  v.string('must be the `next` of the previous page'),
  v.maxLength(200, 'must be the `next` of the previous page'),
  v.rawTransform(({ dataset, addIssue, NEVER }) => {
    const decoded = decodeCursor(dataset.value)
    if (!decoded) {
      addIssue({ message: 'must be the `next` of the previous page, unchanged' })
      return NEVER
    }
    return decoded
  })
)

export const ListQuery = v.object({
  status: v.optional(
    v.pipe(
      listOf<JobStatus>(JOB_STATUSES, 'statuses'),
      v.description(`Only media whose job is in one of these statuses: ${JOB_STATUSES.join(', ')} (comma-separated).`)
    )
  ),
  kind: v.optional(
    v.pipe(
      listOf<MediaKind>(MEDIA_KIND_LIST, 'kinds'),
      v.description('Only these kinds: image, video, audio (comma-separated).')
    )
  ),
  limit: v.optional(
    v.pipe(
      v.string(LIMIT_RULE),
      v.regex(/^\d{1,3}$/, LIMIT_RULE),
      v.description(`How many on a page: 1 to 100 (${DEFAULT_PAGE} when not given).`),
      v.transform(Number),
      v.minValue(1, LIMIT_RULE),
      v.maxValue(100, LIMIT_RULE)
    ),
    String(DEFAULT_PAGE)
  ),
  cursor: v.optional(v.pipe(CursorSchema, v.description('Where the page starts: the `next` of the page before.'))),
})

/** The store's query for a validated query string. */
export function mediaQuery(query: v.InferOutput<typeof ListQuery>): MediaQuery {
  return { statuses: query.status, kinds: query.kind, after: query.cursor, limit: query.limit }
}

/** The cursor of the page after the one ending with `last`. */
export const encodeCursor = (last: { createdAt: string; id: string }) =>
  btoa(JSON.stringify([last.createdAt, last.id]))
    .replace(/=+$/, '')
    .replaceAll('+', '-')
    .replaceAll('/', '_')

function decodeCursor(cursor: string): { createdAt: string; id: string } | null {
  try {
    const value: unknown = JSON.parse(atob(cursor.replaceAll('-', '+').replaceAll('_', '/')))
    if (!Array.isArray(value) || value.length !== 2) return null
    const [createdAt, id] = value
    if (typeof createdAt !== 'string' || Number.isNaN(Date.parse(createdAt)) || !v.is(MediaIdSchema, id)) return null
    return { createdAt, id }
  } catch {
    return null
  }
}

/**
 * `/v1/links`: outputs through signed links (links.ts), with no API key: what an <img> or a <video> loads. The
 * signature names the media, the output and the expiry; a link that does not match, or has expired, is refused (403).
 */
import { Hono } from 'hono'
import * as v from 'valibot'
import { MediaIdSchema } from '@app/shared'
import type { Links } from '../auth/links.ts'
import type { Objects } from '../s3/objects.ts'
import type { MediaRepo } from '../store/media.ts'
import { ApiError } from '../http/errors.ts'
import { OPEN, documenter } from '../http/openapi.ts'
import { OutputPathSchema, RANGE_PARAMETER, outputAnswers, outputOf, sendOutput } from '../http/send-output.ts'
import { param, query } from '../http/validate.ts'

const LinkParams = v.object({ id: MediaIdSchema, name: OutputPathSchema })
const RULE = 'must be as the link was given'
const LinkQuery = v.object({
  expires: v.pipe(
    v.string(RULE),
    v.regex(/^\d{1,12}$/, RULE),
    v.transform(Number),
    v.description('When the link stops working (Unix seconds).')
  ),
  signature: v.pipe(
    v.string(RULE),
    v.regex(/^[A-Za-z0-9_-]{43}$/, RULE),
    v.description('HMAC-SHA256 of the media, the output and the expiry (base64url).')
  ),
})

const doc = documenter({ tag: 'media', security: OPEN, errors: [400, 403, 404] })

export interface LinkRouteDeps {
  links: Links
  media: Pick<MediaRepo, 'get'>
  objects: Pick<Objects, 'get'>
  /**
   * Set when the store serves segments and sprites (PLAYBACK_SEGMENTS=s3): a presigned GET of a key, and the origin
   * those URLs are on (the console's policy lets its player fetch from it).
   */
  segmentStore: { presign: (key: string, seconds: number) => Promise<string>; origin: string } | null
}

export function linkRoutes(deps: LinkRouteDeps) {
  return new Hono().get('/:id/:name', linkDoc, param(LinkParams, 404), query(LinkQuery), async (c) => {
    const {
      id,
      name: { name, file },
    } = c.req.valid('param')
    const { expires, signature } = c.req.valid('query')
    if (!(await deps.links.verify(id, name, expires, signature))) {
      throw new ApiError(
        403,
        'forbidden',
        "the link's signature does not match this output; use the link exactly as it was given"
      )
    }
    const left = expires - Math.floor(Date.now() / 1000)
    if (left < 0)
      throw new ApiError(
        403,
        'forbidden',
        `the link expired at ${new Date(expires * 1000).toISOString()}; ask for a new one`
      )
    const media = await deps.media.get(id)
    if (!media) throw new ApiError(404, 'not_found', `no media with id ${id}`)
    // A shared cache may not keep it (whoever holds the link may fetch it; nobody else), nor anyone past the expiry.
    // A playlist's addresses become links that expire with this one, so a whole playback session ends together.
    return sendOutput(deps.objects, media, outputOf(media, name, file), c.req.header('range'), left, {
      kind: 'linked',
      expiresAt: expires,
      links: deps.links,
      ...(deps.segmentStore ? { presign: deps.segmentStore.presign } : {}),
    })
  })
}

const linkDoc = doc({
  operationId: 'getLinkedOutput',
  summary: 'The bytes of one output, through a signed link (no API key)',
  description:
    'The URL comes from GET /v1/media/{id}/outputs/{name}/link. Any API instance serves it, until it expires. One byte range is answered 206.',
  parameters: [RANGE_PARAMETER],
  responses: outputAnswers('private, max-age=<seconds until the link expires>, immutable'),
  errors: [416],
})

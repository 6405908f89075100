/**
 * Sending an output's bytes, whole or one range of them (ranges.ts), as both ways to fetch one answer: with the API
 * key (routes/media.ts) and through a signed link (routes/links.ts). Their OpenAPI answers are here too.
 */
import { ApiError } from './errors.ts'
import { contentRange, requestedRange } from './ranges.ts'
import type { Objects } from '../s3/objects.ts'
import type { MediaRecord } from '../store/media.ts'

type Output = MediaRecord['outputs'][number]

/** The output `name` of a media, or 404. */
export function outputOf(media: MediaRecord, name: string): Output {
  const output = media.outputs.find((o) => o.name === name)
  if (!output) throw new ApiError(404, 'not_found', `media ${media.id} has no output named ${JSON.stringify(name)}`)
  return output
}

/** The output's bytes (206 for one satisfiable range, 416 past its end), cacheable for `cacheSeconds`. */
export async function sendOutput(
  objects: Pick<Objects, 'get'>,
  media: MediaRecord,
  output: Output,
  rangeHeader: string | undefined,
  cacheSeconds: number
): Promise<Response> {
  const range = requestedRange(rangeHeader, output.size)
  if (range === 'unsatisfiable') {
    throw new ApiError(
      416,
      'range_not_satisfiable',
      `the output is ${output.size} bytes; the range asked for starts past its end`,
      {
        'Content-Range': contentRange(null, output.size),
      }
    )
  }
  const object = await objects.get(output.key, range ?? undefined)
  if (!object)
    throw new ApiError(404, 'not_found', `the output ${output.name} of media ${media.id} is no longer stored`)
  const length = range ? range.end - range.start + 1 : object.size
  return new Response(object.body, {
    status: range ? 206 : 200,
    headers: {
      'Content-Type': output.contentType,
      ...(length !== undefined ? { 'Content-Length': String(length) } : {}),
      ...(range ? { 'Content-Range': contentRange(range, output.size) } : {}),
      'Accept-Ranges': 'bytes',
      // Outputs are written once per job: a new job writes new keys, so a cached copy never goes stale.
      'Cache-Control': `private, max-age=${cacheSeconds}, immutable`,
    },
  })
}

const BINARY = { type: 'string', format: 'binary' } as const
const BYTES = Object.fromEntries(
  ['image/webp', 'image/jpeg', 'image/png', 'image/avif', 'video/mp4'].map((type) => [type, { schema: BINARY }])
)

/** The `Range` header, as the output routes document it. */
export const RANGE_PARAMETER = {
  in: 'header' as const,
  name: 'Range',
  description:
    'One range of bytes, e.g. `bytes=0-1023` (what a video player sends to seek); several are answered with the whole output (200).',
  schema: { type: 'string' as const },
}

/** The 200 and 206 answers of an output route; `caching` says its Cache-Control. */
export function outputAnswers(caching: string) {
  return {
    200: {
      description: 'The output, with its content type.',
      headers: {
        'Cache-Control': { description: caching, schema: { type: 'string' as const } },
        'Accept-Ranges': { description: 'bytes', schema: { type: 'string' as const } },
      },
      content: BYTES,
    },
    206: {
      description: 'The one range asked for.',
      headers: { 'Content-Range': { description: 'bytes <first>-<last>/<size>', schema: { type: 'string' as const } } },
      content: BYTES,
    },
  }
}

/**
 * Sending an output's bytes, whole or one range of them (ranges.ts), as both ways to fetch one answer: with the API
 * key (routes/media.ts) and through a signed link (routes/links.ts). Their OpenAPI answers are here too.
 */
import * as v from 'valibot'
import { OUTPUT_FORMATS } from '@app/shared'
import { ApiError } from './errors.ts'
import { contentRange, requestedRange, type ByteRange } from './ranges.ts'
import { addressesOf, fileOf, type Addressing } from '../playback/addresses.ts'
import { UnknownAddress, isRewritten, rewrite, type Resolve } from '../playback/playlists.ts'
import type { Objects } from '../s3/objects.ts'
import type { MediaRecord } from '../store/media.ts'

type Output = MediaRecord['outputs'][number]

const FILE_RULE = 'must be an output name, or its file name (<name>.<extension>)'
/**
 * An output as a route names it: its name, or its file name `<name>.<extension>`, which is what the playlists it
 * serves address (players such as ffmpeg refuse a segment whose URL lacks a media extension).
 */
export const OutputPathSchema = v.pipe(
  v.string(FILE_RULE),
  v.regex(/^[a-z0-9][a-z0-9_-]{0,31}(?:\.[a-z0-9]{1,8})?$/, FILE_RULE),
  v.description('An output name, or its file name `<name>.<extension>` (what the playlists served here address).'),
  v.transform((path) => {
    const dot = path.indexOf('.')
    return dot < 0 ? { name: path, file: null } : { name: path.slice(0, dot), file: path }
  })
)

/** The output `name` of a media (whose file is `file`, when that is given), or 404. */
export function outputOf(media: MediaRecord, name: string, file: string | null = null): Output {
  const output = media.outputs.find((o) => o.name === name)
  if (!output || (file !== null && fileOf(output) !== file))
    throw new ApiError(404, 'not_found', `media ${media.id} has no output ${JSON.stringify(file ?? name)}`)
  return output
}

/**
 * The output's bytes (206 for one satisfiable range, 416 past its end), cacheable for `cacheSeconds`. A playlist or
 * a storyboard is read whole and served with its addresses rewritten as `addressing` says (playback/addresses.ts).
 */
export async function sendOutput(
  objects: Pick<Objects, 'get'>,
  media: MediaRecord,
  output: Output,
  rangeHeader: string | undefined,
  cacheSeconds: number,
  addressing: Addressing
): Promise<Response> {
  if (isRewritten(output.contentType)) {
    const text = rewritten(
      media,
      output,
      await readDocument(objects, media, output),
      await addressesOf(media, addressing)
    )
    const bytes = new TextEncoder().encode(text)
    const range = checkedRange(rangeHeader, bytes.length)
    const body = range ? bytes.subarray(range.start, range.end + 1) : bytes
    return answer(output, body, { length: body.length, total: bytes.length, range }, cacheSeconds)
  }
  const range = checkedRange(rangeHeader, output.size)
  const object = await objects.get(output.key, range ?? undefined)
  if (!object) throw gone(media, output)
  const length = range ? range.end - range.start + 1 : object.size
  return answer(output, object.body, { length, total: output.size, range }, cacheSeconds)
}

/** The range asked of `size` bytes: null for all of them; 416 when it starts past the end. */
function checkedRange(header: string | undefined, size: number): ByteRange | null {
  const range = requestedRange(header, size)
  if (range !== 'unsatisfiable') return range
  throw new ApiError(
    416,
    'range_not_satisfiable',
    `the output is ${size} bytes; the range asked for starts past its end`,
    {
      'Content-Range': contentRange(null, size),
    }
  )
}

function answer(
  output: Output,
  body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer>,
  /** The bytes sent; of the whole (what Content-Range names); which of them. */
  sent: { length: number | undefined; total: number; range: ByteRange | null },
  cacheSeconds: number
): Response {
  const { length, total, range } = sent
  return new Response(body, {
    status: range ? 206 : 200,
    headers: {
      'Content-Type': output.contentType,
      ...(length !== undefined ? { 'Content-Length': String(length) } : {}),
      ...(range ? { 'Content-Range': contentRange(range, total) } : {}),
      'Accept-Ranges': 'bytes',
      // Outputs are written once per job: a new job writes new keys, so a cached copy never goes stale.
      'Cache-Control': `private, max-age=${cacheSeconds}, immutable`,
    },
  })
}

/** The most of a playlist read to rewrite: a 7-day video in 2 s segments has a ~20 MB one; real ones are KBs. */
const MAX_DOCUMENT_BYTES = 32 * 1024 * 1024

async function readDocument(objects: Pick<Objects, 'get'>, media: MediaRecord, output: Output): Promise<string> {
  if (output.size > MAX_DOCUMENT_BYTES) {
    throw new ApiError(502, 'bad_output', `the output ${output.name} is larger than a playlist can be`)
  }
  const object = await objects.get(output.key)
  if (!object) throw gone(media, output)
  return new Response(object.body).text()
}

function rewritten(media: MediaRecord, output: Output, text: string, resolve: Resolve): string {
  try {
    return rewrite(output.contentType, text, resolve)
  } catch (error) {
    if (!(error instanceof UnknownAddress)) throw error
    throw new ApiError(
      502,
      'bad_output',
      `${error.message}, which is not an output of media ${media.id}: the processor wrote a playlist this API cannot serve`
    )
  }
}

const gone = (media: MediaRecord, output: Output) =>
  new ApiError(404, 'not_found', `the output ${output.name} of media ${media.id} is no longer stored`)

const BINARY = { type: 'string', format: 'binary' } as const
const BYTES = Object.fromEntries(
  [...new Set(Object.values(OUTPUT_FORMATS).map((f) => f.contentType))].map((type) => [type, { schema: BINARY }])
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

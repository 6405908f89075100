/**
 * Where a document's addresses point once the API serves it (playlists.ts rewrites them). Each address the
 * processor wrote is the file name of an output's key (`<name>.<extension>`); it becomes, relative to the document:
 * - under the API key's routes (`/v1/media/<id>/outputs/<file>`): the file name as it is (a player sends the key);
 * - through a signed link (`/v1/links/<id>/<file>?expires=…`): the output's own link, with the same expiry as the
 *   document's, so a whole playback session ends together; or, for bytes (segments, the sprite) when the operator
 *   has the store serve them (PLAYBACK_SEGMENTS=s3), a presigned URL to the object, valid as long.
 * Playlists always come from the API: their addresses need rewriting, which a store cannot do.
 */
import type { Links } from '../auth/links.ts'
import type { MediaRecord } from '../store/media.ts'
import { isRewritten, type Resolve } from './playlists.ts'

/** Who serves segment and sprite bytes to a player that came through a signed link. */
export const SEGMENT_SOURCES = ['api', 's3'] as const
export type SegmentSource = (typeof SEGMENT_SOURCES)[number]

/** The longest a presigned S3 URL may last (SigV4 allows 7 days). */
const MAX_PRESIGNED_SECONDS = 7 * 86_400

export type Addressing =
  | { kind: 'keyed' }
  | {
      kind: 'linked'
      expiresAt: number
      links: Pick<Links, 'sign'>
      /** Set when the store serves bytes: a presigned GET of `key` for `seconds`. */
      presign?: (key: string, seconds: number) => Promise<string>
    }

/** The name of an output's file: the last segment of its key, `<name>.<extension>`. */
export const fileOf = (output: { key: string }) => output.key.slice(output.key.lastIndexOf('/') + 1)

/** The resolver for one document of `media`: every output's file name to the address that serves it. */
export async function addressesOf(media: MediaRecord, how: Addressing): Promise<Resolve> {
  const byFile = new Map<string, string>()
  await Promise.all(
    media.outputs.map(async (output) => byFile.set(fileOf(output), await addressOf(media.id, output, how)))
  )
  return (uri) => byFile.get(uri) ?? null
}

async function addressOf(id: string, output: MediaRecord['outputs'][number], how: Addressing): Promise<string> {
  // The file name, extension and all: players judge a segment by it (ffmpeg refuses one without a media extension).
  const file = fileOf(output)
  if (how.kind === 'keyed') return file
  if (how.presign && !isRewritten(output.contentType)) {
    const seconds = Math.min(MAX_PRESIGNED_SECONDS, Math.max(1, how.expiresAt - Math.floor(Date.now() / 1000)))
    return how.presign(output.key, seconds)
  }
  return `${file}?${await how.links.sign(id, output.name, how.expiresAt)}`
}

/** The store as the server of segments: its presigned GETs, and the origin they are on (learned by signing one). */
export async function segmentStore(s3: { presignGet: (key: string, seconds: number) => Promise<string> }) {
  return { presign: s3.presignGet, origin: new URL(await s3.presignGet('origin', 60)).origin }
}

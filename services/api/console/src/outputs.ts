/**
 * Showing pictures: an <img> cannot send the API key, so each picture is fetched with it and shown from a blob:
 * URL (videos, which are large, play from signed links instead). Outputs never change once written (a new job
 * writes new URLs), so each is fetched once and kept, up to `KEEP` of them; the oldest is let go (its URL revoked)
 * when more come.
 */
import { problemOf, send, type Media } from './api.ts'
import { keyHeaders } from './session.ts'
import { VIDEO_OUTPUTS } from '../../uploads/output-names.ts'

export type Output = Media['outputs'][number]
const KEEP = 120
const kept = new Map<string, Promise<string>>()

/** A blob: URL of the output's bytes, kept for the next time it is shown (pictures). */
export function outputUrl(output: Output): Promise<string> {
  const known = kept.get(output.url)
  if (known) {
    // Most recently used last: the first in the map is the one let go.
    kept.delete(output.url)
    kept.set(output.url, known)
    return known
  }
  const loading = loadOutput(output)
  loading.catch(() => kept.delete(output.url))
  kept.set(output.url, loading)
  while (kept.size > KEEP) {
    const [url, oldest] = kept.entries().next().value!
    kept.delete(url)
    void oldest.then(
      (blob) => URL.revokeObjectURL(blob),
      () => {}
    )
  }
  return loading
}

/** A blob: URL of the output's bytes, fetched with the key. */
async function loadOutput(output: Output): Promise<string> {
  const res = await send(output.url, { headers: keyHeaders() })
  if (!res.ok) throw await problemOf(res)
  return URL.createObjectURL(await res.blob())
}

/** The small picture of a media: its smallest image output (an image's thumb), a video's poster, if any. */
export const thumbnailOf = (media: Media) => imagesOf(media)[0]
/** The large picture: its largest image output. */
export const previewOf = (media: Media) => imagesOf(media).at(-1)

/** Its pictures, smallest first: an image's outputs; a video's poster (not its storyboard's sprite). */
const imagesOf = (media: Media) =>
  media.outputs
    .filter((o) => o.contentType.startsWith('image/') && (media.kind !== 'video' || o.name === VIDEO_OUTPUTS.poster))
    .sort((a, b) => (a.width ?? 0) * (a.height ?? 0) - (b.width ?? 0) * (b.height ?? 0))

/**
 * What the API accepts as an upload, whichever way it arrives (a POST body, tus, a direct upload): the kinds and
 * formats the processors decode, judged from a file's first bytes (never its name or declared type), and the size
 * limit. Every way in asks these, so the rules are written here once.
 */
import { MEDIA_KIND_LIST } from '@app/shared'
import { ApiError } from '../http/errors.ts'
import { sniff, type Sniffed } from './sniff.ts'

export type Accepted = Sniffed
export type Kinds = readonly Accepted['kind'][]
/** What uploads are taken: every kind a processor handles. */
export const ACCEPTED_KINDS: Kinds = MEDIA_KIND_LIST

export const tooLarge = (max: number) =>
  new ApiError(413, 'payload_too_large', `the upload is larger than the limit of ${max} bytes`)

/**
 * What an upload is, from its first bytes (SNIFF_BYTES of them, or all of a shorter file): an accepted image, video
 * or sound, or the 415 that refuses it. Every way of uploading asks this. (An MP4 is taken for a video here; one
 * that turns out to hold only sound is told apart once stored: tracks.ts.)
 */
export function judgeHead(head: Uint8Array, kinds: Kinds = ACCEPTED_KINDS): Accepted {
  const sniffed = sniff(head)
  const refusal = refusalOf(sniffed, kinds)
  if (refusal !== null || !sniffed) {
    throw new ApiError(
      415,
      'unsupported_media_type',
      `the file is ${refusal} (judged from its content, not its name or declared type)`
    )
  }
  return sniffed as Accepted
}

/**
 * The allow-list: what the processors decode. BMP is recognised (to say what it is) but refused: sharp's libvips
 * has no BMP loader.
 */
export const ACCEPTED_FORMATS: Record<Accepted['kind'], readonly string[]> = {
  image: ['jpeg', 'png', 'gif', 'webp', 'tiff', 'heic', 'avif'],
  video: ['mp4', 'mov', '3gp', 'webm', 'mkv', 'avi', 'mpegts', 'flv'],
  audio: ['mp3', 'aac', 'm4a', 'flac', 'wav', 'ogg', 'webm', 'mkv'],
}

/** Why a sniffed file is refused, or null when it is accepted. */
function refusalOf(sniffed: Sniffed | null, kinds: Kinds): string | null {
  if (!sniffed) return 'not an image, video or audio format this service accepts'
  // An SVG is a document, not pixels: it can reference other files and URLs, and rendering it runs an XML parser
  // and a renderer on untrusted input. Refused; upload it rasterised (PNG) instead.
  if (sniffed.format === 'svg')
    return 'an SVG image; SVG is refused because it can reference other files and URLs (upload a PNG instead)'
  if (!kinds.includes(sniffed.kind))
    return `${sniffed.kind === 'image' ? 'an' : 'a'} ${sniffed.kind} file (${sniffed.format}); this service accepts only ${kinds.join(' and ')} uploads here`
  if (!ACCEPTED_FORMATS[sniffed.kind].includes(sniffed.format))
    return `a ${sniffed.format.toUpperCase()} ${sniffed.kind}, a format the processors cannot decode`
  return null
}

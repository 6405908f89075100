/**
 * `GET /v1/media/{id}/playback`: what a page needs to play a video or a sound with no API key. Every URL is a signed link with
 * one expiry; the HLS master and the storyboard are served with their addresses rewritten into links with that same
 * expiry (addresses.ts), so a player fetches everything below them without credentials, and nothing past it.
 */
import { OUTPUT_FORMATS } from '@app/shared'
import { LINK_SECONDS, signedUrl, type Links } from '../auth/links.ts'
import { ApiError } from '../http/errors.ts'
import { fileOf } from './addresses.ts'
import type { Playback } from '../http/bodies.ts'
import type { MediaRecord } from '../store/media.ts'
import { AUDIO_OUTPUTS, VIDEO_OUTPUTS } from '../uploads/output-names.ts'

/**
 * How long playback links last when not asked: an hour, or for a long video twice its duration, so a viewer who
 * pauses still reaches the end (segments are fetched as it plays, each with the playlist's expiry).
 */
export function playbackSeconds(media: MediaRecord): number {
  const duration = media.metadata && 'durationSeconds' in media.metadata ? media.metadata.durationSeconds : 0
  return Math.min(LINK_SECONDS.max, Math.max(LINK_SECONDS.default, Math.ceil(2 * duration)))
}

export async function playbackOf(
  media: MediaRecord,
  options: { origin: string; expiresAt: number; links: Pick<Links, 'sign'> }
): Promise<Playback> {
  if (media.kind === 'image')
    throw new ApiError(409, 'conflict', `media ${media.id} is an image: playback is for videos and sound`)
  if (!media.outputs.length) {
    throw new ApiError(
      409,
      'conflict',
      `media ${media.id} has nothing to play yet (it is ${media.status}); playback starts once its job completes`
    )
  }
  const { origin, expiresAt, links } = options
  // Each link's path ends in the output's file name: a player judging a URL by its extension knows what it gets.
  const link = (output: MediaRecord['outputs'][number]) =>
    signedUrl(links, origin, { id: media.id, name: output.name, file: fileOf(output) }, expiresAt)
  const named = (name: string, contentType: string) =>
    media.outputs.find((o) => o.name === name && o.contentType === contentType)
  const linkTo = async (output: MediaRecord['outputs'][number] | undefined) => (output ? link(output) : null)
  const mp4 = `.${OUTPUT_FORMATS.mp4.extension}`
  const downloads = media.outputs
    .filter((o): o is typeof o & { width: number; height: number } => o.key.endsWith(mp4) && !!o.width && !!o.height)
    .sort((a, b) => a.width * a.height - b.width * b.height)
  return {
    hls: await linkTo(named(VIDEO_OUTPUTS.hls, OUTPUT_FORMATS.m3u8.contentType)),
    storyboard: await linkTo(named(VIDEO_OUTPUTS.storyboard, OUTPUT_FORMATS.vtt.contentType)),
    poster: await linkTo(
      media.kind === 'audio'
        ? named(AUDIO_OUTPUTS.cover, OUTPUT_FORMATS.webp.contentType)
        : named(VIDEO_OUTPUTS.poster, OUTPUT_FORMATS.webp.contentType)
    ),
    downloads: await Promise.all(
      downloads.map(async (o) => ({ name: o.name, width: o.width, height: o.height, size: o.size, url: await link(o) }))
    ),
    audio: await Promise.all(
      media.outputs
        .filter((o) => o.contentType.startsWith('audio/'))
        .map(async (o) => ({ name: o.name, contentType: o.contentType, size: o.size, url: await link(o) }))
    ),
    peaks: media.kind === 'audio' ? await linkTo(named(AUDIO_OUTPUTS.peaks, OUTPUT_FORMATS.json.contentType)) : null,
    expiresAt: new Date(expiresAt * 1000).toISOString(),
  }
}

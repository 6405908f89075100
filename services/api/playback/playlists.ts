/**
 * Rewriting the addresses in the text outputs a player reads: HLS playlists and the storyboard's WebVTT. The
 * processor writes them with addresses relative to their own key (`hls-720p.m3u8`, `storyboard-sprite.jpg#xywh=…`),
 * which work where the store serves the files itself; the API serves them instead, so each address becomes one it
 * serves (a signed link, a presigned URL or a path under the API key's routes): see addresses.ts.
 */
import { OUTPUT_FORMATS } from '@app/shared'

/** The address to write for an address found in a document, or null when it names nothing the media has. */
export type Resolve = (uri: string) => string | null

/** Whether an output's content type is a document whose addresses are rewritten when served. */
export const isRewritten = (contentType: string) =>
  contentType === OUTPUT_FORMATS.m3u8.contentType || contentType === OUTPUT_FORMATS.vtt.contentType

/** The document with its addresses rewritten, by its content type. */
export function rewrite(contentType: string, text: string, resolve: Resolve): string {
  return contentType === OUTPUT_FORMATS.vtt.contentType ? rewriteVtt(text, resolve) : rewriteM3u8(text, resolve)
}

/** A playlist names an address the media has no output for: serving it would give a player a dead end. */
export class UnknownAddress extends Error {}

/**
 * Every address of an HLS playlist (RFC 8216): the URI lines (variants, segments) and the `URI="…"` attributes of
 * tags (`EXT-X-MAP`, `EXT-X-MEDIA`, `EXT-X-I-FRAME-STREAM-INF`, …). An address that resolves to nothing throws.
 */
export function rewriteM3u8(text: string, resolve: Resolve): string {
  const must = (uri: string) => {
    const to = resolve(uri)
    if (to === null) throw new UnknownAddress(`the playlist names ${JSON.stringify(uri.slice(0, 100))}`)
    return to
  }
  return text
    .split('\n')
    .map((line) => {
      const bare = line.replace(/\r$/, '')
      if (bare.startsWith('#')) return line.replace(/URI="([^"]*)"/g, (_, uri: string) => `URI="${must(uri)}"`)
      return bare.trim() ? must(bare.trim()) + lineEnd(line) : line
    })
    .join('\n')
}

/** A CRLF file keeps its line ends. */
const lineEnd = (line: string) => (line.endsWith('\r') ? '\r' : '')

const TIMING = /^\s*(\d+:)?\d\d:\d\d\.\d{3}\s+-->\s/

/**
 * The image addresses of a WebVTT storyboard: each cue's payload is `<address>#xywh=x,y,w,h` (the fragment kept).
 * Payload lines that resolve to nothing (a subtitle's words) are left as they are.
 */
export function rewriteVtt(text: string, resolve: Resolve): string {
  let inCue = false
  return text
    .split('\n')
    .map((line) => {
      const bare = line.replace(/\r$/, '')
      if (!bare.trim()) {
        inCue = false
        return line
      }
      if (TIMING.test(bare)) {
        inCue = true
        return line
      }
      if (!inCue) return line
      const match = /^(\S+?)(#\S*)?$/.exec(bare.trim())
      const to = match ? resolve(match[1]!) : null
      return to === null ? line : `${to}${match![2] ?? ''}${lineEnd(line)}`
    })
    .join('\n')
}

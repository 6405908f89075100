/**
 * Where and how outputs are stored: `<output.prefix>/<name>.<extension>`, with the content type of their format.
 * The same job always writes the same keys, so a retried or re-driven job overwrites rather than adds.
 */

/** Every output format a processor writes, with its file extension and content type. */
export const OUTPUT_FORMATS = {
  webp: { extension: 'webp', contentType: 'image/webp' },
  jpeg: { extension: 'jpg', contentType: 'image/jpeg' },
  png: { extension: 'png', contentType: 'image/png' },
  avif: { extension: 'avif', contentType: 'image/avif' },
  mp4: { extension: 'mp4', contentType: 'video/mp4' },
  // HLS: playlists, and fragmented MP4 (CMAF) segments, all of a rung's in one file read by byte range.
  m3u8: { extension: 'm3u8', contentType: 'application/vnd.apple.mpegurl' },
  m4s: { extension: 'm4s', contentType: 'video/mp4' },
  vtt: { extension: 'vtt', contentType: 'text/vtt' },
  m4a: { extension: 'm4a', contentType: 'audio/mp4' },
  webm: { extension: 'webm', contentType: 'audio/webm' },
  json: { extension: 'json', contentType: 'application/json' },
} as const
export type OutputFormat = keyof typeof OUTPUT_FORMATS

/** The key of output `name` of a job whose outputs go under `prefix`. */
export function outputKey(prefix: string, name: string, format: OutputFormat): string {
  return `${prefix}/${outputFileName(name, format)}`
}

/** `<name>.<extension>`: how an output's key ends, and what a processor names its file (relative URIs resolve alike). */
export function outputFileName(name: string, format: OutputFormat): string {
  return `${name}.${OUTPUT_FORMATS[format].extension}`
}

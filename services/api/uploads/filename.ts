/**
 * The file name a client gives (multipart `filename`, `Content-Disposition`, `X-Filename`) is kept as metadata and
 * returned in the media body; it never becomes part of an object key or a path (keys derive from ids alone). It is
 * still made harmless for whoever displays it: only its last path segment, Unicode NFC, no control or bidi-override
 * characters (which can make `exe.jpg` read as `gpj.exe`), at most 255 characters.
 */
import contentDisposition from 'content-disposition'

export const MAX_FILENAME_LENGTH = 255

/** The sanitised name, or null when nothing printable is left. */
export function sanitizeFilename(raw: string | null | undefined): string | null {
  if (!raw) return null
  const last = raw.split(/[/\\]/).pop() ?? ''
  const clean = last
    .normalize('NFC')
    // Cc: C0/C1 controls, NUL included. Bidi embeddings, overrides and isolates, and the BOM.
    .replace(/[\p{Cc}\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]/gu, '')
    .trim()
  if (!clean || clean === '.' || clean === '..') return null
  // Whole code points, so a name is never cut inside a surrogate pair.
  return Array.from(clean).slice(0, MAX_FILENAME_LENGTH).join('')
}

/**
 * The name a raw upload declares: `Content-Disposition: …; filename*=UTF-8''…` or `filename="…"` (RFC 6266), else
 * `X-Filename` (percent-encoded UTF-8 when it contains `%`, as browsers cannot send other bytes in a header).
 */
export function declaredFilename(headers: Headers): string | null {
  const disposition = headers.get('content-disposition')
  if (disposition) {
    try {
      const name = contentDisposition.parse(disposition).parameters.filename
      if (name) return sanitizeFilename(name)
    } catch {
      // A malformed header names nothing; the upload itself is still fine.
    }
  }
  const header = headers.get('x-filename')
  if (!header) return null
  try {
    return sanitizeFilename(header.includes('%') ? decodeURIComponent(header) : header)
  } catch {
    return sanitizeFilename(header)
  }
}

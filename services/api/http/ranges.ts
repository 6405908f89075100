/**
 * HTTP range requests (RFC 9110 §14) on an object of known size: what a video player sends to start and to seek.
 * One range is served (206); several, or a header that is not `bytes=…`, are answered with the whole object (200),
 * which the RFC allows; a range wholly past the end is 416.
 */

/** Bytes `start` to `end`, both included. */
export interface ByteRange {
  start: number
  end: number
}

/** The range a `Range` header asks of an object of `size` bytes: null for the whole object, 'unsatisfiable' for 416. */
export function requestedRange(header: string | undefined, size: number): ByteRange | null | 'unsatisfiable' {
  const match = header ? /^bytes=(\d*)-(\d*)$/.exec(header.trim()) : null
  if (!match || (!match[1] && !match[2])) return null
  const [first, last] = [match[1] ? Number(match[1]) : null, match[2] ? Number(match[2]) : null]
  if (first === null) {
    // A suffix: the last `last` bytes.
    if (last === 0 || size === 0) return 'unsatisfiable'
    return { start: Math.max(0, size - last!), end: size - 1 }
  }
  if (first >= size || (last !== null && last < first)) return 'unsatisfiable'
  return { start: first, end: last === null ? size - 1 : Math.min(last, size - 1) }
}

/** The `Content-Range` of an answer: the range served, or (`null`, with a 416) only the size. */
export const contentRange = (range: ByteRange | null, size: number) =>
  range ? `bytes ${range.start}-${range.end}/${size}` : `bytes */${size}`

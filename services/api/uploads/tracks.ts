/**
 * An MP4 holding only sound is audio, not a video: its first bytes (`ftyp isom`, `mp42`) say MP4 either way, so once
 * it is stored its tracks are looked at: the handler type of each `moov/trak/mdia/hdlr` box (`vide`, `soun`, …), read
 * with a few ranged reads (the top-level box headers, then the `moov` box), never the whole file.
 */
import type { Sniffed } from './sniff.ts'

/** Bytes `start` to `end` (excluded) of the stored file; fewer at its end. */
export type ReadRange = (start: number, end: number) => Promise<Uint8Array>

/** Top-level boxes looked at before giving up (ftyp, free, mdat, moov, udta… a real file has a handful). */
const MAX_TOP_BOXES = 64
/** The largest `moov` read: an hour of video has a few MB of sample tables; more is not a file we can judge. */
const MAX_MOOV_BYTES = 32 * 1024 * 1024

/** What a stored upload is, its tracks considered: an ISO-BMFF "video" with sound tracks and no video track is audio. */
export async function refineKind(sniffed: Sniffed, read: ReadRange, size: number): Promise<Sniffed> {
  if (sniffed.kind !== 'video' || !['mp4', 'mov', '3gp'].includes(sniffed.format)) return sniffed
  const handlers = await isoTrackHandlers(read, size)
  if (handlers && handlers.includes('soun') && !handlers.includes('vide')) return { kind: 'audio', format: 'm4a' }
  return sniffed
}

/** The handler types of an ISO-BMFF file's tracks, or null when its `moov` cannot be found or read. */
export async function isoTrackHandlers(read: ReadRange, size: number): Promise<string[] | null> {
  let at = 0
  for (let i = 0; i < MAX_TOP_BOXES && at + 8 <= size; i++) {
    const header = await read(at, Math.min(size, at + 16))
    const box = boxHeader(header, 0, size - at)
    if (!box) return null
    if (box.type === 'moov') {
      if (box.size > MAX_MOOV_BYTES) return null
      const moov = await read(at, at + box.size)
      return moov.byteLength === box.size ? handlersIn(moov, box.header, box.size) : null
    }
    at += box.size
  }
  return null
}

/** The box at `at` (its type, whole size and header size), within `limit` bytes; null when malformed. */
function boxHeader(bytes: Uint8Array, at: number, limit: number) {
  if (at + 8 > bytes.byteLength) return null
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let size = view.getUint32(at)
  let header = 8
  if (size === 1) {
    if (at + 16 > bytes.byteLength) return null
    size = Number(view.getBigUint64(at + 8))
    header = 16
  } else if (size === 0) size = limit
  if (size < header || size > limit) return null
  return { type: String.fromCharCode(...bytes.subarray(at + 4, at + 8)), size, header }
}

/** The children of the box whose payload is `bytes[start, end)`. */
function* children(bytes: Uint8Array, start: number, end: number) {
  for (let at = start; at + 8 <= end; ) {
    const box = boxHeader(bytes, at, end - at)
    if (!box) return
    yield { type: box.type, start: at + box.header, end: at + box.size }
    at += box.size
  }
}

function handlersIn(moov: Uint8Array, start: number, end: number): string[] {
  const handlers: string[] = []
  for (const trak of children(moov, start, end)) {
    if (trak.type !== 'trak') continue
    for (const mdia of children(moov, trak.start, trak.end)) {
      if (mdia.type !== 'mdia') continue
      for (const hdlr of children(moov, mdia.start, mdia.end)) {
        // hdlr: version and flags (4 bytes), pre_defined (4), then the handler type.
        if (hdlr.type === 'hdlr' && hdlr.end - hdlr.start >= 12)
          handlers.push(String.fromCharCode(...moov.subarray(hdlr.start + 8, hdlr.start + 12)))
      }
    }
  }
  return handlers
}

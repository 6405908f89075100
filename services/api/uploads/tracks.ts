/**
 * An MP4 or a WebM/Matroska file holding only sound is audio, not a video: its first bytes say MP4 (`ftyp isom`,
 * `mp42`) or WebM either way, so once it is stored its tracks are looked at, with a few ranged reads, never the
 * whole file:
 * - MP4: the handler type of each `moov/trak/mdia/hdlr` box (`vide`, `soun`, …), from the top-level box headers and
 *   then the `moov` box;
 * - Matroska (WebM, what browsers' MediaRecorder writes for a voice note): the `TrackType` of each `TrackEntry` in
 *   the `Tracks` element (1 video, 2 audio), from the top-level elements of the `Segment`.
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
  if (sniffed.kind !== 'video') return sniffed
  if (['mp4', 'mov', '3gp'].includes(sniffed.format)) {
    const handlers = await isoTrackHandlers(read, size)
    if (handlers && handlers.includes('soun') && !handlers.includes('vide')) return { kind: 'audio', format: 'm4a' }
  }
  if (sniffed.format === 'webm' || sniffed.format === 'mkv') {
    const types = await matroskaTrackTypes(read, size)
    if (types && types.includes(MATROSKA_AUDIO) && !types.includes(MATROSKA_VIDEO))
      return { kind: 'audio', format: sniffed.format }
  }
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

// ── Matroska ─────────────────────────────────────────────────────────────────────────────────────────────────────

const MATROSKA_VIDEO = 1
const MATROSKA_AUDIO = 2
/** Element ids (with their length marker, as written). */
const EBML_HEADER = 0x1a45dfa3
const SEGMENT = 0x18538067
const TRACKS = 0x1654ae6b
const TRACK_ENTRY = 0xae
const TRACK_TYPE = 0x83
/** Top-level elements of the Segment looked at before giving up (SeekHead, Info, Tracks come first in practice). */
const MAX_SEGMENT_CHILDREN = 64
/** The largest `Tracks` read: a few tracks' codec setups are kilobytes. */
const MAX_TRACKS_BYTES = 1024 * 1024

/** An EBML variable-length integer at `at`: its length and value (`keepMarker` for ids); null when malformed. */
function vint(
  bytes: Uint8Array,
  at: number,
  keepMarker: boolean
): { length: number; value: number; unknown: boolean } | null {
  const first = bytes[at]
  if (first === undefined || first === 0) return null
  const length = Math.clz32(first) - 23 // 1 for 0b1xxxxxxx … 8 for 0b00000001
  if (length > 8 || at + length > bytes.byteLength) return null
  let value = keepMarker ? first : first & (0xff >> length)
  let ones = value === 0xff >> length
  for (let i = 1; i < length; i++) {
    value = value * 256 + bytes[at + i]!
    ones &&= bytes[at + i] === 0xff
  }
  return { length, value, unknown: !keepMarker && ones }
}

/** The element at `at`: its id, where its data starts, and its size (null: unknown, as a live recording writes). */
function element(bytes: Uint8Array, at: number) {
  const id = vint(bytes, at, true)
  if (!id || id.length > 4) return null
  const size = vint(bytes, at + id.length, false)
  if (!size) return null
  return { id: id.value, data: at + id.length + size.length, size: size.unknown ? null : size.value }
}

/** The track types of a Matroska file's `Tracks`, or null when they cannot be found or read. */
export async function matroskaTrackTypes(read: ReadRange, size: number): Promise<number[] | null> {
  const head = await read(0, Math.min(size, 64))
  const ebml = element(head, 0)
  if (!ebml || ebml.id !== EBML_HEADER || ebml.size === null) return null
  const segmentAt = ebml.data + ebml.size
  const segmentHead = await read(segmentAt, Math.min(size, segmentAt + 16))
  const segment = element(segmentHead, 0)
  if (!segment || segment.id !== SEGMENT) return null
  let at = segmentAt + segment.data
  const end = segment.size === null ? size : Math.min(size, at + segment.size)
  for (let i = 0; i < MAX_SEGMENT_CHILDREN && at < end; i++) {
    const header = await read(at, Math.min(end, at + 16))
    const child = element(header, 0)
    // An element of unknown size (a live cluster) cannot be stepped over: Tracks, if anywhere, came before it.
    if (!child || child.size === null) return null
    if (child.id === TRACKS) {
      if (child.size > MAX_TRACKS_BYTES) return null
      const tracks = await read(at + child.data, at + child.data + child.size)
      return tracks.byteLength === child.size ? trackTypesIn(tracks) : null
    }
    at += child.data + child.size
  }
  return null
}

/** The TrackType of each TrackEntry in the data of a Tracks element. */
function trackTypesIn(tracks: Uint8Array): number[] | null {
  const types: number[] = []
  for (let at = 0; at < tracks.byteLength; ) {
    const entry = element(tracks, at)
    if (!entry || entry.size === null || entry.data + entry.size > tracks.byteLength) return null
    if (entry.id === TRACK_ENTRY) {
      for (let inner = entry.data; inner < entry.data + entry.size; ) {
        const field = element(tracks, inner)
        if (!field || field.size === null || field.data + field.size > entry.data + entry.size) return null
        if (field.id === TRACK_TYPE && field.size >= 1 && field.size <= 8) {
          let value = 0
          for (let i = 0; i < field.size; i++) value = value * 256 + tracks[field.data + i]!
          types.push(value)
        }
        inner = field.data + field.size
      }
    }
    at = entry.data + entry.size
  }
  return types
}

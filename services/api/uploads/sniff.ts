/**
 * Decides what an upload is from its first bytes, never from its declared type or name. Only formats on this
 * list are accepted; the answer names the processor queue (`kind`) and the container or codec (`format`) that the
 * processor then holds the file to.
 */
export type Sniffed =
  | { kind: 'image'; format: 'jpeg' | 'png' | 'gif' | 'webp' | 'tiff' | 'bmp' | 'heic' | 'avif' | 'svg' }
  | { kind: 'video'; format: 'mp4' | 'mov' | '3gp' | 'webm' | 'mkv' | 'avi' | 'mpegts' | 'flv' }
  | { kind: 'audio'; format: 'm4a' | 'mp3' | 'aac' | 'ogg' | 'flac' | 'wav' | 'webm' | 'mkv' }

/** How many leading bytes `sniff` wants (fewer is fine for short files). */
export const SNIFF_BYTES = 4100

const ascii = (bytes: Uint8Array, at: number, length: number) =>
  String.fromCharCode(...bytes.subarray(at, Math.min(bytes.length, at + length)))
const startsWith = (bytes: Uint8Array, signature: number[], at = 0) => signature.every((b, i) => bytes[at + i] === b)

export function sniff(bytes: Uint8Array): Sniffed | null {
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return { kind: 'image', format: 'jpeg' }
  if (startsWith(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return { kind: 'image', format: 'png' }
  const head = ascii(bytes, 0, 12)
  if (head.startsWith('GIF87a') || head.startsWith('GIF89a')) return { kind: 'image', format: 'gif' }
  if (head.startsWith('II*\0') || head.startsWith('MM\0*')) return { kind: 'image', format: 'tiff' }
  if (head.startsWith('RIFF')) {
    const form = ascii(bytes, 8, 4)
    if (form === 'WEBP') return { kind: 'image', format: 'webp' }
    if (form === 'AVI ') return { kind: 'video', format: 'avi' }
    if (form === 'WAVE') return { kind: 'audio', format: 'wav' }
    return null
  }
  if (ascii(bytes, 4, 4) === 'ftyp') return sniffIsoBmff(bytes)
  if (startsWith(bytes, [0x1a, 0x45, 0xdf, 0xa3])) {
    const docType = ascii(bytes, 0, 64)
    if (docType.includes('webm')) return { kind: 'video', format: 'webm' }
    if (docType.includes('matroska')) return { kind: 'video', format: 'mkv' }
    return null
  }
  if (head.startsWith('FLV\x01')) return { kind: 'video', format: 'flv' }
  // MPEG-TS: 188-byte packets, each starting with the sync byte 0x47.
  if (bytes.length >= 377 && bytes[0] === 0x47 && bytes[188] === 0x47 && bytes[376] === 0x47)
    return { kind: 'video', format: 'mpegts' }
  if (isBmp(bytes)) return { kind: 'image', format: 'bmp' }
  if (head.startsWith('OggS')) return { kind: 'audio', format: 'ogg' }
  if (head.startsWith('fLaC')) return { kind: 'audio', format: 'flac' }
  if (head.startsWith('ID3')) return { kind: 'audio', format: 'mp3' }
  if (bytes[0] === 0xff && bytes[1] !== undefined) {
    if ((bytes[1] & 0xf6) === 0xf0) return { kind: 'audio', format: 'aac' } // ADTS
    if ((bytes[1] & 0xe0) === 0xe0) return { kind: 'audio', format: 'mp3' } // MPEG audio frame sync
  }
  if (isSvg(bytes)) return { kind: 'image', format: 'svg' }
  return null
}

/** ISO base media files (MP4, MOV, 3GP, HEIF, AVIF, M4A) say what they are in their `ftyp` brands. */
function sniffIsoBmff(bytes: Uint8Array): Sniffed | null {
  const size = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0)
  const major = ascii(bytes, 8, 4)
  const brands = [major]
  for (let at = 16; at + 4 <= Math.min(size, bytes.length, 256); at += 4) brands.push(ascii(bytes, at, 4))
  const has = (...names: string[]) => brands.some((b) => names.includes(b))
  if (has('avif', 'avis')) return { kind: 'image', format: 'avif' }
  if (has('heic', 'heix', 'heim', 'heis', 'hevc', 'hevx', 'mif1', 'msf1')) return { kind: 'image', format: 'heic' }
  if (major === 'qt  ') return { kind: 'video', format: 'mov' }
  if (/^3g[p2]/.test(major)) return { kind: 'video', format: '3gp' }
  if (major === 'M4A ' || major === 'M4B ' || major === 'F4A ') return { kind: 'audio', format: 'm4a' }
  return { kind: 'video', format: 'mp4' }
}

function isBmp(bytes: Uint8Array): boolean {
  if (bytes.length < 18 || bytes[0] !== 0x42 || bytes[1] !== 0x4d) return false
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const reserved = view.getUint32(6, true)
  const dibSize = view.getUint32(14, true)
  return reserved === 0 && [12, 40, 52, 56, 64, 108, 124].includes(dibSize)
}

/** An SVG is XML text whose root element is `<svg`, possibly after a prolog, comments and a doctype. */
function isSvg(bytes: Uint8Array): boolean {
  const start = bytes.subarray(0, 4096)
  if (start.includes(0)) return false // binary
  const text = new TextDecoder().decode(start).replace(/^\uFEFF/, '')
  const rest = text
    .replace(/^\s*(<\?xml[\s\S]*?\?>)?/, '')
    .replace(/^(\s*(<!--[\s\S]*?-->|<!DOCTYPE[^>]*>))*/i, '')
    .trimStart()
  return /^<svg[\s>]/i.test(rest)
}

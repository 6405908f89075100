/**
 * Test images made on the fly with sharp, and EXIF written byte by byte (so fixtures do not rely on sharp's EXIF); an
 * animated GIF byte by byte, and an HEVC HEIC with heif-enc.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp, { type Sharp } from 'sharp'

/** A `width`×`height` image with four differently coloured quadrants: top-left red, top-right green, bottom-left blue, bottom-right white. */
export async function quadrants(width: number, height: number): Promise<Buffer> {
  const w = Math.floor(width / 2)
  const h = Math.floor(height / 2)
  const block = (colour: string, bw: number, bh: number) =>
    sharp({ create: { width: bw, height: bh, channels: 3, background: colour } })
      .png()
      .toBuffer()
  return sharp({ create: { width, height, channels: 3, background: '#ffffff' } })
    .composite([
      { input: await block('#ff0000', w, h), left: 0, top: 0 },
      { input: await block('#00ff00', width - w, h), left: w, top: 0 },
      { input: await block('#0000ff', w, height - h), left: 0, top: h },
    ])
    .png()
    .toBuffer()
}

/** The colours of the four quadrant centres of an image: [top-left, top-right, bottom-left, bottom-right]. */
export async function quadrantColours(image: Uint8Array): Promise<number[][]> {
  const { data, info } = await sharp(image).removeAlpha().raw().toBuffer({ resolveWithObject: true })
  const at = (x: number, y: number) => {
    const i = (Math.floor(y) * info.width + Math.floor(x)) * info.channels
    return [data[i]!, data[i + 1]!, data[i + 2]!]
  }
  const { width: w, height: h } = info
  return [at(w / 4, h / 4), at((3 * w) / 4, h / 4), at(w / 4, (3 * h) / 4), at((3 * w) / 4, (3 * h) / 4)]
}

/**
 * The stored pixels that a viewer applying EXIF `orientation` turns into `upright` (EXIF 2.32, tag 0x0112):
 * each orientation names the transform from stored to displayed, so the fixture stores its inverse.
 */
export async function storeForOrientation(upright: Buffer, orientation: number): Promise<Buffer> {
  const step = async (input: Buffer, op: (s: Sharp) => Sharp) => op(sharp(input)).png().toBuffer()
  switch (orientation) {
    case 1:
      return upright
    case 2:
      return step(upright, (s) => s.flop())
    case 3:
      return step(upright, (s) => s.rotate(180))
    case 4:
      return step(upright, (s) => s.flip())
    case 5:
      return step(await step(upright, (s) => s.rotate(90)), (s) => s.flop()) // transpose
    case 6:
      return step(upright, (s) => s.rotate(270))
    case 7:
      return step(await step(upright, (s) => s.rotate(90)), (s) => s.flip()) // transverse
    case 8:
      return step(upright, (s) => s.rotate(90))
    default:
      throw new Error(`no EXIF orientation ${orientation}`)
  }
}

/** A JPEG of `pixels` with an EXIF block holding `orientation` and, if asked, a GPS position. */
export async function jpegWithExif(
  pixels: Buffer,
  exif: { orientation?: number; gps?: boolean }
): Promise<Uint8Array<ArrayBuffer>> {
  const jpeg = new Uint8Array(await sharp(pixels).jpeg({ quality: 95 }).toBuffer())
  const segment = exifSegment(exif.orientation ?? 1, exif.gps ?? false)
  // Insert APP1 right after the SOI marker.
  const out = new Uint8Array(jpeg.length + segment.length)
  out.set(jpeg.subarray(0, 2))
  out.set(segment, 2)
  out.set(jpeg.subarray(2), 2 + segment.length)
  return out
}

/** An APP1 Exif segment (little-endian TIFF): IFD0 with Orientation and, optionally, a GPS IFD at 51°30'N 0°7'W. */
function exifSegment(orientation: number, gps: boolean): Uint8Array {
  const tiff = new DataView(new ArrayBuffer(140))
  let at = 0
  const u16 = (v: number) => (tiff.setUint16(at, v, true), (at += 2))
  const u32 = (v: number) => (tiff.setUint32(at, v, true), (at += 4))
  const entry = (tag: number, type: number, count: number, value: number) => (
    u16(tag), u16(type), u32(count), u32(value)
  )
  u16(0x4949), u16(42), u32(8) // "II", magic, IFD0 at 8
  u16(gps ? 2 : 1)
  entry(0x0112, 3, 1, orientation) // Orientation, SHORT (left-justified in the 4-byte value)
  if (gps) entry(0x8825, 4, 1, 38) // GPSInfo IFD pointer
  u32(0)
  if (gps) {
    at = 38
    u16(4)
    entry(0x0001, 2, 2, 'N'.charCodeAt(0)) // GPSLatitudeRef "N\0"
    entry(0x0002, 5, 3, 92) // GPSLatitude, 3 RATIONALs at 92
    entry(0x0003, 2, 2, 'W'.charCodeAt(0)) // GPSLongitudeRef "W\0"
    entry(0x0004, 5, 3, 116) // GPSLongitude at 116
    u32(0)
    for (const [n, d] of [
      [51, 1],
      [30, 1],
      [0, 1],
      [0, 1],
      [7, 1],
      [0, 1],
    ] as const)
      u32(n), u32(d)
  }
  const body = new Uint8Array(tiff.buffer, 0, gps ? 140 : 30)
  const header = new TextEncoder().encode('Exif\0\0')
  const length = 2 + header.length + body.length
  return new Uint8Array([0xff, 0xe1, length >> 8, length & 0xff, ...header, ...body])
}

/** Whether EXIF bytes hold a GPS IFD pointer (tag 0x8825, either byte order). */
export function hasGpsTag(exif: Uint8Array | undefined): boolean {
  if (!exif) return false
  for (let i = 0; i + 1 < exif.length; i++) {
    if ((exif[i] === 0x25 && exif[i + 1] === 0x88) || (exif[i] === 0x88 && exif[i + 1] === 0x25)) return true
  }
  return false
}

/**
 * An animated GIF of `frames` frames on a `width`×`height` canvas, written byte by byte: each frame is one pixel
 * (23 bytes), but a decoder renders every frame at the canvas size. 1500 frames of 100×100 is 34 kB.
 */
export function animatedGif(frames: number, width: number, height: number): Uint8Array {
  const le16 = (n: number) => [n & 0xff, n >> 8]
  // Header, logical screen (global colour table of 2), the table (black, white), NETSCAPE2.0 looping.
  const head = [
    ...new TextEncoder().encode('GIF89a'),
    ...le16(width),
    ...le16(height),
    0x80,
    0,
    0,
    0,
    0,
    0,
    255,
    255,
    255,
  ]
  const loop = [0x21, 0xff, 0x0b, ...new TextEncoder().encode('NETSCAPE2.0'), 3, 1, 0, 0, 0]
  // Graphic control (10 ms), image descriptor (1×1 at 0,0), LZW data: clear, index 0, end (min code size 2).
  const frame = [0x21, 0xf9, 4, 0, 1, 0, 0, 0, 0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0]
  const out = new Uint8Array(head.length + loop.length + frames * frame.length + 1)
  out.set(head)
  out.set(loop, head.length)
  for (let i = 0; i < frames; i++) out.set(frame, head.length + loop.length + i * frame.length)
  out[out.length - 1] = 0x3b // trailer
  return out
}

/** An HEVC-coded HEIC (what iPhones write) of `width`×`height`, made by libheif's `heif-enc` (libheif-examples). */
export async function hevcHeic(width: number, height: number): Promise<Uint8Array> {
  const dir = mkdtempSync(join(tmpdir(), 'media-test-heic-'))
  try {
    await sharp(await quadrants(width, height)).toFile(join(dir, 'in.png'))
    const child = Bun.spawn(['heif-enc', '--quality', '50', '--output', join(dir, 'out.heic'), join(dir, 'in.png')], {
      stdout: 'ignore',
      stderr: 'pipe',
    })
    const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited])
    if (code !== 0) throw new Error(`heif-enc exited with ${code}: ${stderr.trim()}`)
    return new Uint8Array(readFileSync(join(dir, 'out.heic')))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * A small PNG followed by random bytes up to `size`: it sniffs as a PNG and does not compress, which is what upload
 * tests of large files need (it is no decodable image past its first bytes).
 */
export async function paddedPng(size: number): Promise<Buffer<ArrayBuffer>> {
  const png = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#abcdef' } })
    .png()
    .toBuffer()
  const bytes = Buffer.alloc(size) as Buffer<ArrayBuffer>
  png.copy(bytes)
  // getRandomValues fills at most 64 KiB a call.
  for (let at = png.length; at < size; at += 65536)
    crypto.getRandomValues(bytes.subarray(at, Math.min(size, at + 65536)))
  return bytes
}

/**
 * Generators for the hostile input matrix: files and names an attacker (or a broken client) would upload. Every
 * input is made here, byte by byte, with sharp, with node:zlib or with the system ffmpeg; nothing is downloaded.
 * Importing this module does nothing; each generator either returns the file's bytes or writes into a directory the
 * caller gives (reusing a file made there before) and returns its path. The whole set takes a few seconds on two
 * cores and no file is more than a few MB.
 */
import { existsSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { constants as zlibConstants, crc32, deflateRawSync, deflateSync } from 'node:zlib'
import sharp from 'sharp'

type Bytes = Uint8Array<ArrayBuffer>

const encoder = new TextEncoder()
const utf8 = (text: string): Bytes => encoder.encode(text) as Bytes
/** Each char code of `text` as one byte (for formats with binary bytes in otherwise ASCII text, like PDF). */
const latin1 = (text: string): Bytes => Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff)
const ascii = (text: string): number[] => Array.from(text, (c) => c.charCodeAt(0))

function concat(parts: readonly Uint8Array[]): Bytes {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const part of parts) out.set(part, at), (at += part.length)
  return out
}

function u32be(value: number): Bytes {
  const out = new Uint8Array(4)
  new DataView(out.buffer).setUint32(0, value >>> 0)
  return out
}

// ---------------------------------------------------------------------------------------------------------------
// Not media at all

/** 0 bytes: nothing to sniff, nothing to decode; a reader that assumes a header (or `bytes[0]`) fails. */
export function empty(): Bytes {
  return new Uint8Array(0)
}

/** One byte, 0xFF: the first byte of a JPEG/MPEG-audio sync, so a sniffer that checks `bytes[1]` carelessly reads past the end. */
export function oneByte(): Bytes {
  return Uint8Array.of(0xff)
}

/** Plain UTF-8 text posing as media: no magic number at all. */
export function plainText(): Bytes {
  return utf8('This is not a picture or a video, just a few lines of text.\n'.repeat(8))
}

/**
 * A valid zip archive (two deflated entries, local headers, central directory, end record) built by hand with
 * node:zlib raw deflate: a container format that must not be mistaken for media (nor unpacked).
 */
export function zipFile(): Bytes {
  const entries = [
    { name: 'hello.txt', data: utf8('Hello from inside a zip file.\n'.repeat(20)) },
    { name: 'dir/../../escape.txt', data: utf8('a zip-slip entry name\n') },
  ]
  const locals: Bytes[] = []
  const centrals: Bytes[] = []
  let offset = 0
  for (const { name, data } of entries) {
    const nameBytes = utf8(name)
    const packed = deflateRawSync(data, { level: 9 })
    const crc = crc32(data)
    const local = new DataView(new ArrayBuffer(30))
    local.setUint32(0, 0x04034b50, true) // local file header signature
    local.setUint16(4, 20, true) // version needed: 2.0 (deflate)
    local.setUint16(6, 0, true) // flags
    local.setUint16(8, 8, true) // method: deflate
    local.setUint16(10, 0, true) // time 00:00:00
    local.setUint16(12, ((2024 - 1980) << 9) | (1 << 5) | 1, true) // date 2024-01-01
    local.setUint32(14, crc, true)
    local.setUint32(18, packed.length, true)
    local.setUint32(22, data.length, true)
    local.setUint16(26, nameBytes.length, true)
    local.setUint16(28, 0, true) // extra length
    const central = new DataView(new ArrayBuffer(46))
    central.setUint32(0, 0x02014b50, true) // central directory header signature
    central.setUint16(4, 20, true) // version made by
    central.setUint16(6, 20, true) // version needed
    central.setUint16(8, 0, true)
    central.setUint16(10, 8, true)
    central.setUint16(12, 0, true)
    central.setUint16(14, ((2024 - 1980) << 9) | (1 << 5) | 1, true)
    central.setUint32(16, crc, true)
    central.setUint32(20, packed.length, true)
    central.setUint32(24, data.length, true)
    central.setUint16(28, nameBytes.length, true)
    // extra, comment, disk number, internal and external attributes: 0
    central.setUint32(42, offset, true) // offset of the local header
    const localBytes = concat([new Uint8Array(local.buffer), nameBytes, packed])
    locals.push(localBytes)
    centrals.push(concat([new Uint8Array(central.buffer), nameBytes]))
    offset += localBytes.length
  }
  const directory = concat(centrals)
  const end = new DataView(new ArrayBuffer(22))
  end.setUint32(0, 0x06054b50, true) // end of central directory signature
  end.setUint16(8, entries.length, true) // entries on this disk
  end.setUint16(10, entries.length, true) // entries in all
  end.setUint32(12, directory.length, true)
  end.setUint32(16, offset, true) // where the central directory starts
  return concat([...locals, directory, new Uint8Array(end.buffer)])
}

/** A tiny valid one-page PDF (correct xref offsets): a document format that image loaders with PDF support would render. */
export function pdfFile(): Bytes {
  const content = 'BT /F1 18 Tf 20 40 Td (Not an image) Tj ET\n'
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>',
    `<< /Length ${content.length} >>\nstream\n${content}endstream`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>',
  ]
  let text = '%PDF-1.4\n%\xe2\xe3\xcf\xd3\n'
  const offsets: number[] = []
  objects.forEach((body, i) => {
    offsets.push(text.length)
    text += `${i + 1} 0 obj\n${body}\nendobj\n`
  })
  const xref = text.length
  text += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`
  for (const at of offsets) text += `${String(at).padStart(10, '0')} 00000 n \n`
  text += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`
  return latin1(text)
}

// ---------------------------------------------------------------------------------------------------------------
// Real images that lie, or are broken

// No SVG here: a test process that started the image processor has libvips' SVG loader blocked.
const gradient = (width: number, height: number) =>
  sharp({ create: { width, height, channels: 3, background: '#3a7bd5' } }).composite([
    {
      input: { create: { width: width >> 1, height: height >> 1, channels: 3, background: '#f5a623' } },
      left: width >> 2,
      top: height >> 2,
    },
  ])

/** A real 64×48 JPEG, to be uploaded under a `.png` name: the name (and a declared type) lie about the content. */
export async function jpegAsPng(): Promise<Bytes> {
  return new Uint8Array(await gradient(64, 48).jpeg({ quality: 85 }).toBuffer())
}

/** A real 64×48 PNG, to be declared `image/jpeg`: the declared content type lies about the content. */
export async function pngAsJpeg(): Promise<Bytes> {
  return new Uint8Array(await gradient(64, 48).png().toBuffer())
}

/**
 * A noisy 640×480 baseline JPEG cut at 60 % of its bytes: a valid header and the first part of the scan, then
 * nothing (no EOI). libjpeg warns ("premature end of data") and pads with grey unless told to fail on warnings.
 */
export async function truncatedJpeg(): Promise<Bytes> {
  const whole = await sharp({
    create: {
      width: 640,
      height: 480,
      channels: 3,
      background: '#808080',
      noise: { type: 'gaussian', mean: 128, sigma: 40 },
    },
  })
    .jpeg({ quality: 80 })
    .toBuffer()
  return new Uint8Array(whole.subarray(0, Math.floor(whole.length * 0.6)))
}

/** A PNG chunk: length, type, data, CRC-32 of type and data. */
function pngChunk(type: string, data: Uint8Array): Bytes {
  const typeAndData = concat([Uint8Array.from(ascii(type)), data])
  return concat([u32be(data.length), typeAndData, u32be(crc32(typeAndData))])
}

const PNG_SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)

function ihdr(width: number, height: number, bitDepth: number, colourType: number): Bytes {
  const data = new DataView(new ArrayBuffer(13))
  data.setUint32(0, width)
  data.setUint32(4, height)
  data.setUint8(8, bitDepth)
  data.setUint8(9, colourType)
  // compression 0, filter 0, interlace 0
  return pngChunk('IHDR', new Uint8Array(data.buffer))
}

/**
 * A ~200-byte PNG whose IHDR claims 30000×30000 RGB (900 Mpx, 2.7 GB decoded), all CRCs valid, but whose IDAT holds
 * one row: the header alone must trip the pixel limit before any buffer is sized from it.
 */
export function hugeDimensionsPng(width = 30000, height = 30000): Bytes {
  const row = new Uint8Array(1 + width * 3) // filter byte 0 + black pixels
  return concat([
    PNG_SIGNATURE,
    ihdr(width, height, 8, 2),
    pngChunk('IDAT', deflateSync(row, { level: 9 })),
    pngChunk('IEND', new Uint8Array(0)),
  ])
}

/**
 * A decompression bomb: a complete, valid 50000×50000 1-bit greyscale PNG (2.5 gigapixels; 312 MB of zlib data
 * that a decoder expanding to 8 bits per pixel turns into 2.5 GB) in ~300 KB. Every byte of the image data is 0
 * (filter "none", black pixels), so it is deflated without ever being held in memory: a 1 MiB block of zeros is
 * compressed once with a full flush (which byte-aligns and resets the dictionary, so every such block compresses to
 * the same bytes), repeated, and closed with the remainder; the Adler-32 of n zeros is (n mod 65521) << 16 | 1.
 */
export function decompressionBombPng(side = 50000): Bytes {
  const rowBytes = 1 + Math.ceil(side / 8)
  const total = rowBytes * side
  const blockSize = 1 << 20
  const zeros = new Uint8Array(blockSize)
  const block = deflateRawSync(zeros, { level: 9, finishFlush: zlibConstants.Z_FULL_FLUSH })
  const blocks = Math.floor(total / blockSize)
  const tail = deflateRawSync(zeros.subarray(0, total - blocks * blockSize), { level: 9 })
  const zlibStream = new Uint8Array(2 + blocks * block.length + tail.length + 4)
  zlibStream.set([0x78, 0xda]) // zlib header: deflate, 32K window, level 9
  for (let i = 0; i < blocks; i++) zlibStream.set(block, 2 + i * block.length)
  zlibStream.set(tail, 2 + blocks * block.length)
  new DataView(zlibStream.buffer).setUint32(zlibStream.length - 4, ((total % 65521) * 65536 + 1) >>> 0)
  // IDAT chunks of at most 1 MiB, as encoders write them.
  const idats: Bytes[] = []
  for (let at = 0; at < zlibStream.length; at += blockSize)
    idats.push(pngChunk('IDAT', zlibStream.subarray(at, at + blockSize)))
  return concat([PNG_SIGNATURE, ihdr(side, side, 1, 0), ...idats, pngChunk('IEND', new Uint8Array(0))])
}

/** GIF LZW (variable-length codes, LSB first) of palette indices, packed into data sub-blocks with the terminator. */
function gifLzw(indices: Uint8Array, minCodeSize: number): Bytes {
  const clear = 1 << minCodeSize
  const eoi = clear + 1
  const bytes: number[] = []
  let bitBuffer = 0
  let bitCount = 0
  let codeSize = minCodeSize + 1
  const emit = (code: number) => {
    bitBuffer |= code << bitCount
    bitCount += codeSize
    while (bitCount >= 8) bytes.push(bitBuffer & 0xff), (bitBuffer >>>= 8), (bitCount -= 8)
  }
  let table = new Map<number, number>()
  let next = eoi + 1
  emit(clear)
  let prefix = indices[0] ?? 0
  for (let i = 1; i < indices.length; i++) {
    const k = indices[i]!
    const key = (prefix << 8) | k
    const code = table.get(key)
    if (code !== undefined) {
      prefix = code
      continue
    }
    emit(prefix)
    if (next === 4096) {
      emit(clear)
      table = new Map()
      next = eoi + 1
      codeSize = minCodeSize + 1
    } else {
      if (next >= 1 << codeSize) codeSize++
      table.set(key, next++)
    }
    prefix = k
  }
  emit(prefix)
  emit(eoi)
  if (bitCount > 0) bytes.push(bitBuffer & 0xff)
  const out: number[] = [minCodeSize]
  for (let at = 0; at < bytes.length; at += 255) {
    const block = bytes.slice(at, at + 255)
    out.push(block.length, ...block)
  }
  out.push(0)
  return Uint8Array.from(out)
}

/**
 * An animated GIF89a, looping forever (NETSCAPE2.0), with `frames` frames (3000 by default) of `side`×`side`
 * pixels, alternately black and white, 20 ms each: ~100 KB (~35 B a frame) that ask a decoder for thousands of pages
 * (sharp with `pages: -1` stacks them into one side × side·frames image).
 */
export function manyFramesGif(frames = 3000, side = 16): Bytes {
  const screen = new DataView(new ArrayBuffer(7))
  screen.setUint16(0, side, true)
  screen.setUint16(2, side, true)
  screen.setUint8(4, 0x80) // global colour table of 2 entries
  const header = concat([
    Uint8Array.from(ascii('GIF89a')),
    new Uint8Array(screen.buffer),
    Uint8Array.of(0, 0, 0, 0xff, 0xff, 0xff),
  ])
  const loop = Uint8Array.of(0x21, 0xff, 0x0b, ...ascii('NETSCAPE2.0'), 0x03, 0x01, 0x00, 0x00, 0x00)
  const frame = (colour: number) => {
    const control = Uint8Array.of(0x21, 0xf9, 0x04, 0x04, 2, 0, 0, 0x00) // disposal "do not dispose", delay 2/100 s
    const descriptor = new DataView(new ArrayBuffer(10))
    descriptor.setUint8(0, 0x2c)
    descriptor.setUint16(5, side, true)
    descriptor.setUint16(7, side, true)
    return concat([control, new Uint8Array(descriptor.buffer), gifLzw(new Uint8Array(side * side).fill(colour), 2)])
  }
  const black = frame(0)
  const white = frame(1)
  return concat([
    header,
    loop,
    ...Array.from({ length: frames }, (_, i) => (i % 2 ? white : black)),
    Uint8Array.of(0x3b),
  ])
}

/** A valid 1×65535 PNG: an extreme aspect ratio (and PNG's largest height in 16 bits) that breaks naive resize and thumbnail maths. */
export async function tallPng(): Promise<Bytes> {
  return new Uint8Array(
    await sharp({ create: { width: 1, height: 65535, channels: 3, background: '#808080' } })
      .png()
      .toBuffer()
  )
}

/** An APP1 Exif segment: a little-endian TIFF whose IFD0 holds Orientation and an ImageDescription of `text`. */
function exifSegment(text: string): Bytes {
  const description = utf8(text + '\0')
  const tiff = new DataView(new ArrayBuffer(38 + description.length))
  tiff.setUint16(0, 0x4949) // "II"
  tiff.setUint16(2, 42, true)
  tiff.setUint32(4, 8, true) // IFD0 at 8
  tiff.setUint16(8, 2, true) // two entries, in tag order
  tiff.setUint16(10, 0x010e, true) // ImageDescription, ASCII, at 38
  tiff.setUint16(12, 2, true)
  tiff.setUint32(14, description.length, true)
  tiff.setUint32(18, 38, true)
  tiff.setUint16(22, 0x0112, true) // Orientation, SHORT, 1
  tiff.setUint16(24, 3, true)
  tiff.setUint32(26, 1, true)
  tiff.setUint16(30, 1, true)
  tiff.setUint32(34, 0, true) // no IFD1
  new Uint8Array(tiff.buffer).set(description, 38)
  const payload = concat([Uint8Array.from(ascii('Exif\0\0')), new Uint8Array(tiff.buffer)])
  return concat([Uint8Array.of(0xff, 0xe1, (payload.length + 2) >> 8, (payload.length + 2) & 0xff), payload])
}

/**
 * `profile` grown to `size` bytes (or a little more if it is already close) with one more, private tag ('hstl',
 * type 'data'), so it stays a well-formed ICC profile (header size, tag table, 4-byte alignment; profile ID zeroed =
 * not computed) however large it gets.
 */
function growIccProfile(profile: Uint8Array, size: number): Bytes {
  const view = new DataView(profile.buffer, profile.byteOffset, profile.byteLength)
  const count = view.getUint32(128)
  const tableEnd = 132 + 12 * count
  const dataStart = tableEnd + 12
  const tagData = profile.subarray(tableEnd)
  const newTagAt = (dataStart + tagData.length + 3) & ~3
  const newTagSize = 12 + Math.max(0, size - newTagAt - 12)
  const out = new Uint8Array(newTagAt + newTagSize)
  const o = new DataView(out.buffer)
  out.set(profile.subarray(0, 128))
  o.setUint32(0, out.length) // profile size
  out.fill(0, 84, 100) // profile ID: not computed
  o.setUint32(128, count + 1)
  for (let i = 0; i < count; i++) {
    const at = 132 + 12 * i
    o.setUint32(at, view.getUint32(at))
    o.setUint32(at + 4, view.getUint32(at + 4) + 12) // every tag's data moves down by one table entry
    o.setUint32(at + 8, view.getUint32(at + 8))
  }
  out.set(ascii('hstl'), tableEnd)
  o.setUint32(tableEnd + 4, newTagAt)
  o.setUint32(tableEnd + 8, newTagSize)
  out.set(tagData, dataStart)
  out.set(ascii('data'), newTagAt)
  o.setUint32(newTagAt + 8, 1) // binary data
  for (let i = newTagAt + 12; i < out.length; i++) out[i] = i & 0xff
  return out
}

/**
 * A 64×48 JPEG carrying `exifSegments` APP1 Exif segments of ~64 KB each (16 by default: ~1 MB of EXIF, each a valid
 * TIFF with a 65 KB ImageDescription) and a valid sRGB ICC profile grown to `iccBytes` (3 MB by default) with a
 * private tag, split over ~46 APP2 ICC_PROFILE segments: a few KB of pixels buried under megabytes of metadata that
 * a loader parses, copies and may keep on the output.
 */
export async function hugeMetadataJpeg(options: { exifSegments?: number; iccBytes?: number } = {}): Promise<Bytes> {
  const { exifSegments = 16, iccBytes = 3_000_000 } = options
  const base = gradient(64, 48)
  const withIcc = await base.clone().withIccProfile('srgb').jpeg().toBuffer()
  const srgb = (await sharp(withIcc).metadata()).icc
  if (!srgb) throw new Error('sharp wrote no ICC profile')
  const icc = growIccProfile(srgb, iccBytes)
  const chunkSize = 65535 - 2 - 14
  const chunks = Math.ceil(icc.length / chunkSize)
  if (chunks > 255) throw new Error(`an ICC profile of ${icc.length} bytes needs more than 255 APP2 segments`)
  const app2: Bytes[] = []
  for (let i = 0; i < chunks; i++) {
    const part = icc.subarray(i * chunkSize, (i + 1) * chunkSize)
    const length = 2 + 14 + part.length
    app2.push(
      concat([Uint8Array.of(0xff, 0xe2, length >> 8, length & 0xff, ...ascii('ICC_PROFILE\0'), i + 1, chunks), part])
    )
  }
  const exif = exifSegment('hostile EXIF '.repeat(5000)) // 65,001 bytes of text: the segment is just under 64 KB
  const jpeg = new Uint8Array(await base.jpeg({ quality: 85 }).toBuffer())
  return concat([jpeg.subarray(0, 2), ...Array.from({ length: exifSegments }, () => exif), ...app2, jpeg.subarray(2)])
}

// ---------------------------------------------------------------------------------------------------------------
// SVG that reaches out

/**
 * An SVG (sniffed as SVG: no DOCTYPE) that points at a local file in every way SVG can: `<image href>` and
 * `xlink:href` to file:///etc/passwd, `<feImage>`, a CSS `@import` and `url()` of a file: URL, and a relative path
 * up the tree. A renderer that follows any of them leaks local files into the output (or errors on them).
 */
export function svgLocalFile(): Bytes {
  return utf8(`<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="48" viewBox="0 0 64 48">
  <style>@import url("file:///etc/passwd"); rect { fill: url("file:///etc/hostname#p"); }</style>
  <defs><filter id="f"><feImage href="file:///etc/passwd"/></filter></defs>
  <rect width="64" height="48" filter="url(#f)"/>
  <image href="file:///etc/passwd" width="64" height="48"/>
  <image xlink:href="file:///etc/passwd" width="64" height="48"/>
  <image href="../../../../../../etc/passwd" width="64" height="48"/>
  <use href="file:///etc/passwd#x"/>
</svg>
`)
}

/**
 * An SVG whose DOCTYPE declares XML external entities: one on /etc/passwd, one on `origin` (a loopback server the
 * test runs, `http://127.0.0.1:PORT`, path /entity.xml) — expanded into the drawn text by a parser that resolves
 * entities. (Its internal subset also defeats a simple "skip the DOCTYPE, find `<svg`" sniffer.)
 */
export function svgExternalEntity(origin?: string): Bytes {
  const remote = origin ? `\n  <!ENTITY remote SYSTEM "${origin}/entity.xml">` : ''
  return utf8(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE svg [
  <!ENTITY passwd SYSTEM "file:///etc/passwd">${remote}
]>
<svg xmlns="http://www.w3.org/2000/svg" width="400" height="100">
  <text x="0" y="20">&passwd;</text>${origin ? '\n  <text x="0" y="60">&remote;</text>' : ''}
</svg>
`)
}

/**
 * An SVG (sniffed as SVG) that makes a renderer fetch from `origin` (a loopback server the test runs,
 * `http://127.0.0.1:PORT`): `<image href>` /x.png, `xlink:href` /xlink.png, CSS `@import` /style.css, CSS `url()`
 * /fill.svg, `<use href>` /use.svg, `<feImage>` /fe.png. Any request reaching the server is a server-side request
 * forgery.
 */
export function svgLoopback(origin: string): Bytes {
  return utf8(`<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="48" viewBox="0 0 64 48">
  <style>@import url("${origin}/style.css"); circle { fill: url("${origin}/fill.svg#p"); }</style>
  <defs><filter id="f"><feImage href="${origin}/fe.png"/></filter></defs>
  <rect width="64" height="48" fill="#888" filter="url(#f)"/>
  <image href="${origin}/x.png" width="64" height="48"/>
  <image xlink:href="${origin}/xlink.png" width="64" height="48"/>
  <use href="${origin}/use.svg#x"/>
  <circle cx="32" cy="24" r="10"/>
</svg>
`)
}

// ---------------------------------------------------------------------------------------------------------------
// Playlists posing as MP4 (upload them with a `.mp4` name and `video/mp4`)

/**
 * An HLS playlist (`#EXTM3U`) whose segments are `localFile` (a path, also as a file: URL) and `url` (a loopback
 * URL the test serves): ffmpeg's HLS demuxer, if it probes the upload as HLS, opens them; a test proves it doesn't.
 */
export function hlsPosingAsMp4(localFile: string, url: string): Bytes {
  return utf8(
    [
      '#EXTM3U',
      '#EXT-X-VERSION:3',
      '#EXT-X-TARGETDURATION:2',
      '#EXT-X-MEDIA-SEQUENCE:0',
      '#EXTINF:2.0,',
      url,
      '#EXTINF:2.0,',
      localFile,
      '#EXTINF:2.0,',
      `file://${localFile}`,
      '#EXT-X-ENDLIST',
      '',
    ].join('\n')
  )
}

/**
 * An ffconcat script (`ffconcat version 1.0`) listing `localFile` and `url`: ffmpeg's concat demuxer, if it probes
 * the upload as concat, opens them; a test proves it doesn't.
 */
export function ffconcatPosingAsMp4(localFile: string, url: string): Bytes {
  const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`
  return utf8(`ffconcat version 1.0\nfile ${quote(url)}\nduration 2\nfile ${quote(localFile)}\nduration 2\n`)
}

// ---------------------------------------------------------------------------------------------------------------
// Videos that lie about their size (made with the system ffmpeg, cached in the caller's directory)

async function run(program: string, args: string[]): Promise<void> {
  const child = Bun.spawn([program, ...args], { stdin: 'ignore', stdout: 'ignore', stderr: 'pipe' })
  const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited])
  if (code !== 0) throw new Error(`${program} ${args.join(' ')} exited with ${code}: ${stderr.trim()}`)
}

const ffmpeg = (args: string[]) => run('ffmpeg', ['-nostdin', '-hide_banner', '-v', 'error', '-y', ...args])

/** `dir/name` if made before; else made by `make` into a temporary name and renamed, so a killed run leaves no half file. */
async function cached(dir: string, name: string, make: (file: string) => Promise<void>): Promise<string> {
  const file = join(dir, name)
  if (existsSync(file)) return file
  const partial = join(dir, `.${name}.${process.pid}.${Math.random().toString(36).slice(2)}.partial`)
  try {
    await make(partial)
    renameSync(partial, file)
  } finally {
    rmSync(partial, { force: true })
  }
  return file
}

interface Box {
  type: string
  at: number
  end: number
  /** Where the box's content starts (after size, type and any 64-bit size). */
  content: number
}

function* boxes(view: DataView, start: number, end: number): Generator<Box> {
  let at = start
  while (at + 8 <= end) {
    let size = view.getUint32(at)
    const type = String.fromCharCode(
      view.getUint8(at + 4),
      view.getUint8(at + 5),
      view.getUint8(at + 6),
      view.getUint8(at + 7)
    )
    let content = at + 8
    if (size === 1) (size = Number(view.getBigUint64(at + 8))), (content += 8)
    else if (size === 0) size = end - at
    if (size < 8) return
    yield { type, at, end: at + size, content }
    at += size
  }
}

/**
 * Rewrites an MP4's declared durations to `seconds`: `mvhd` and every `tkhd` (in the movie time scale) and every
 * `mdhd` (in its media time scale), box versions 0 and 1. The samples (`stts`) are left alone.
 */
function patchDurations(bytes: Uint8Array, seconds: number): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const setDuration = (at: number, version: number, value: number) => {
    if (version === 1) view.setBigUint64(at, BigInt(value))
    else if (value > 0xffffffff) throw new Error(`a duration of ${value} does not fit a version 0 box`)
    else view.setUint32(at, value)
  }
  /** Patches a `mvhd` or `mdhd` (same layout up to the duration) and returns its time scale. */
  const header = (box: Box) => {
    const version = view.getUint8(box.content)
    const scale = view.getUint32(box.content + (version === 1 ? 20 : 12))
    setDuration(box.content + (version === 1 ? 24 : 16), version, seconds * scale)
    return scale
  }
  const moov = [...boxes(view, 0, bytes.length)].find((b) => b.type === 'moov')
  if (!moov) throw new Error('no moov box')
  const mvhd = [...boxes(view, moov.content, moov.end)].find((b) => b.type === 'mvhd')
  if (!mvhd) throw new Error('no mvhd box')
  const movieScale = header(mvhd)
  for (const trak of boxes(view, moov.content, moov.end)) {
    if (trak.type !== 'trak') continue
    for (const box of boxes(view, trak.content, trak.end)) {
      if (box.type === 'tkhd') {
        const version = view.getUint8(box.content)
        setDuration(box.content + (version === 1 ? 28 : 20), version, seconds * movieScale)
      }
      if (box.type === 'mdia')
        for (const inner of boxes(view, box.content, box.end)) if (inner.type === 'mdhd') header(inner)
    }
  }
}

/**
 * A 1-second 64×64 H.264 MP4 (10 frames, a few KB, no edit list) whose headers claim `hours` hours (10 by default,
 * i.e. 36000 s): `mvhd`, `tkhd` and `mdhd` durations patched in place. ffprobe reports the format duration from
 * `mvhd`; a processor that plans work, progress or limits from it believes the lie. With `lastFrame`, the lie is
 * not only in the headers: the last frame's timestamp is moved to `hours` hours (the first 9 frames stay 0.1 s
 * apart), so the samples span the hours too and a constant-frame-rate transcode would emit hours of frames.
 */
export async function longDurationMp4(
  dir: string,
  options: { hours?: number; lastFrame?: boolean } = {}
): Promise<string> {
  const { hours = 10, lastFrame = false } = options
  const seconds = hours * 3600
  return cached(dir, `long-duration-${hours}h${lastFrame ? '-last-frame' : ''}.mp4`, async (file) => {
    await ffmpeg([
      ...['-f', 'lavfi', '-i', 'testsrc2=size=64x64:rate=10:duration=1'],
      ...(lastFrame ? ['-vf', `setpts='if(eq(N,9),${seconds}/TB,PTS)'`, '-fps_mode', 'passthrough'] : []),
      ...['-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '-use_editlist', '0', '-f', 'mp4', file],
    ])
    const bytes = new Uint8Array(await Bun.file(file).arrayBuffer())
    patchDurations(bytes, seconds)
    await Bun.write(file, bytes)
  })
}

/**
 * An 8192×8192 H.264 MP4 of 2 flat grey frames: ~200 KB on disk (1.6 s to make), 64 Mpx (100 MB of YUV) per
 * decoded frame, past H.264 level 6.2's frame size; a processor that decodes or scales it without a dimension limit
 * spends memory and time.
 */
export async function hugeFrameVideo(dir: string): Promise<string> {
  return cached(dir, 'huge-frame-8192.mp4', (file) =>
    ffmpeg([
      ...['-f', 'lavfi', '-i', 'color=c=gray:size=8192x8192:rate=2:duration=1'],
      ...['-frames:v', '2', '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '-f', 'mp4', file],
    ])
  )
}

/**
 * A video with `streams` (50 by default) 16×16 one-frame MPEG-4 video streams, from one source mapped again and
 * again: a processor that opens a decoder (or an output) per stream, or picks "the" video stream carelessly, pays
 * for every one.
 */
export async function manyStreamsVideo(
  dir: string,
  options: { streams?: number; container?: 'mp4' | 'mkv' } = {}
): Promise<string> {
  const { streams = 50, container = 'mp4' } = options
  return cached(dir, `many-streams-${streams}.${container}`, (file) =>
    ffmpeg([
      ...['-f', 'lavfi', '-i', 'color=c=green:size=16x16:rate=1:duration=1'],
      ...Array.from({ length: streams }, () => ['-map', '0:v']).flat(),
      ...['-frames:v', '1', '-c:v', 'mpeg4', '-f', container === 'mkv' ? 'matroska' : 'mp4', file],
    ])
  )
}

// ---------------------------------------------------------------------------------------------------------------
// File names

/** A POSIX path traversal: joined naively onto a storage directory it escapes to /etc/passwd. */
export const traversalName = '../../etc/passwd'

/** A Windows path traversal with backslashes (which POSIX `basename` keeps, and Windows-side consumers split on). */
export const windowsTraversalName = '..\\..\\windows\\win.ini'

/**
 * NUL bytes (C string truncation: "photo.png" to a C library, ".exe" after), CR/LF (header injection in a
 * Content-Disposition), other C0 controls, ANSI escapes that rewrite a terminal (clear screen, set title), DEL and
 * C1 controls (NEL, CSI).
 */
export const controlCharName =
  'photo.png\u0000.exe\u0000\r\nX-Injected: 1\r\n\t\u0001\u0007\u0008\u001b[2J\u001b]0;owned\u0007\u007f\u0085\u009b31m.jpg'

const unicodePieces = [
  'Ünïcödé façade naïve ',
  'Ελληνικά ',
  'Кириллица ',
  'العربية ',
  'עברית ',
  '中文文件名 ',
  '日本語のファイル ',
  '한국어 ',
  'हिन्दी ',
  'ภาษาไทย ',
  'ግዕዝ ',
  '𝕳𝖔𝖘𝖙𝖎𝖑𝖊 ',
  '😀🎉👩‍👩‍👧‍👦🏳️‍🌈🇺🇳 ',
  'Z̸̢̛̖͓a̵̧̛̪l̶̨̛g̷̡̛o̴̢̧ ',
  'e\u0301\u0302\u0303\u0304\u0305\u0306 ',
  '\u200b\u200c\u200d\u2060\ufeff',
  '\u202e',
  'gpj.exe',
  '\u202c',
  '\u2066\u2067\u2068\u2069',
  '．．／．．／etc／passwd ',
  '∕etc∕shadow ',
  'ﷺ ',
  '\u00a0\u3000',
  'Å'.normalize('NFD') + 'Å'.normalize('NFC') + ' ',
]

/**
 * 10 KB (10,240 UTF-8 bytes at most, whole pieces only) of mixed scripts: Latin with diacritics, Greek, Cyrillic,
 * Arabic and Hebrew (right to left), CJK, Devanagari, Thai, Ethiopic, mathematical letters and emoji (astral plane,
 * ZWJ sequences, flags), stacked combining marks, zero-width characters, bidi overrides (U+202E RLO: "gpj.exe"
 * displays as "exe.jpg") and isolates, fullwidth "．．／" (NFKC-normalises to "../"), lookalike slashes, NFD and NFC
 * forms of one letter. Ends in RLO + "gpj.exe", so its last characters read ".exe" but display "exe.jpg".
 */
export const longUnicodeName: string = (() => {
  const tail = '\u202egpj.exe'
  const limit = 10 * 1024 - encoder.encode(tail).length
  let name = ''
  let bytes = 0
  for (let i = 0; ; i++) {
    const piece = unicodePieces[i % unicodePieces.length]!
    const size = encoder.encode(piece).length
    if (bytes + size > limit) break
    name += piece
    bytes += size
  }
  return name + tail
})()

/** Magic-byte sniffing on real encoder output and on headers built byte by byte. */
import { describe, expect, test } from 'bun:test'
import sharp from 'sharp'
import { sniff } from '../../services/api/uploads/sniff.ts'

const text = (s: string) => new TextEncoder().encode(s)
const ftyp = (major: string, ...compatible: string[]) =>
  new Uint8Array([
    0,
    0,
    0,
    16 + 4 * compatible.length,
    ...text('ftyp' + major),
    0,
    0,
    0,
    0,
    ...text(compatible.join('')),
  ])

describe('sniff', () => {
  test('recognises images sharp writes', async () => {
    const base = sharp({ create: { width: 8, height: 8, channels: 3, background: '#abc' } })
    for (const format of ['jpeg', 'png', 'gif', 'webp', 'tiff', 'avif'] as const) {
      const bytes = new Uint8Array(await base.clone().toFormat(format).toBuffer())
      expect(sniff(bytes)).toEqual({ kind: 'image', format })
    }
  })

  test('tells images, videos and audio apart inside ISO-BMFF by brand', () => {
    expect(sniff(ftyp('heic', 'mif1', 'heic'))).toEqual({ kind: 'image', format: 'heic' })
    expect(sniff(ftyp('mif1', 'mif1', 'avif'))).toEqual({ kind: 'image', format: 'avif' })
    expect(sniff(ftyp('isom', 'isom', 'mp41'))).toEqual({ kind: 'video', format: 'mp4' })
    expect(sniff(ftyp('qt  ', 'qt  '))).toEqual({ kind: 'video', format: 'mov' })
    expect(sniff(ftyp('3gp4', '3gp4'))).toEqual({ kind: 'video', format: '3gp' })
    expect(sniff(ftyp('M4A ', 'M4A '))).toEqual({ kind: 'audio', format: 'm4a' })
  })

  test('recognises other containers and SVG, and refuses text and playlists', () => {
    expect(sniff(new Uint8Array([0x1a, 0x45, 0xdf, 0xa3, 0x9f, 0x42, 0x82, 0x84, ...text('webm')]))).toEqual({
      kind: 'video',
      format: 'webm',
    })
    expect(sniff(text('RIFF\0\0\0\0AVI LIST'))).toEqual({ kind: 'video', format: 'avi' })
    expect(sniff(text('FLV\x01\x05\0\0\0\x09'))).toEqual({ kind: 'video', format: 'flv' })
    expect(sniff(text('<?xml version="1.0"?>\n<!-- logo -->\n<svg xmlns="http://www.w3.org/2000/svg"/>'))).toEqual({
      kind: 'image',
      format: 'svg',
    })
    expect(sniff(text('#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1/x.ts\n'))).toBeNull()
    expect(sniff(text('ffconcat version 1.0\nfile other.mp4\n'))).toBeNull()
    expect(sniff(text('hello'))).toBeNull()
    expect(sniff(new Uint8Array(0))).toBeNull()
  })
})

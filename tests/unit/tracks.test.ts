/**
 * Telling an MP4 that holds only sound from a video (uploads/tracks.ts): the tracks' handler types read with ranged
 * reads, whether the `moov` comes first (faststart) or last, on files ffmpeg makes; and files whose boxes lie. And the
 * magic bytes of every audio format ffmpeg writes.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sniff } from '../../services/api/uploads/sniff.ts'
import { isoTrackHandlers, matroskaTrackTypes, refineKind } from '../../services/api/uploads/tracks.ts'

const dir = mkdtempSync(join(tmpdir(), 'media-tracks-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

async function make(name: string, args: string[]): Promise<Uint8Array> {
  const file = join(dir, name)
  const child = Bun.spawn(['ffmpeg', '-nostdin', '-v', 'error', '-y', ...args, file], { stderr: 'pipe' })
  if ((await child.exited) !== 0) throw new Error(await new Response(child.stderr).text())
  return new Uint8Array(readFileSync(file))
}
const sine = ['-f', 'lavfi', '-i', 'sine=duration=1']
const picture = ['-f', 'lavfi', '-i', 'testsrc=size=64x48:duration=1']

/** A reader over the bytes that counts what it was asked for. */
function reader(bytes: Uint8Array) {
  const asked: number[] = []
  return {
    asked,
    read: async (start: number, end: number) => {
      asked.push(Math.min(end, bytes.length) - start)
      return bytes.slice(start, Math.min(end, bytes.length))
    },
  }
}

test('every audio format ffmpeg writes is sniffed as audio, with or without tags', async () => {
  const made = {
    'mp3 with ID3': await make('tagged.mp3', [...sine, '-metadata', 'title=T', '-c:a', 'libmp3lame']),
    'mp3 without ID3 or Xing': await make('bare.mp3', [
      ...sine,
      '-c:a',
      'libmp3lame',
      '-id3v2_version',
      '0',
      '-write_xing',
      '0',
    ]),
    'aac in ADTS': await make('tone.aac', [...sine, '-c:a', 'aac', '-f', 'adts']),
    m4a: await make('tone.m4a', [...sine, '-c:a', 'aac', '-f', 'ipod']),
    flac: await make('tone.flac', [...sine, '-c:a', 'flac']),
    wav: await make('tone.wav', [...sine, '-c:a', 'pcm_s16le']),
    'ogg vorbis': await make('tone.ogg', [...sine, '-c:a', 'libvorbis']),
    'ogg opus': await make('tone.opus', [...sine, '-c:a', 'libopus']),
  }
  expect(Object.fromEntries(Object.entries(made).map(([name, bytes]) => [name, sniff(bytes)]))).toEqual({
    'mp3 with ID3': { kind: 'audio', format: 'mp3' },
    'mp3 without ID3 or Xing': { kind: 'audio', format: 'mp3' },
    'aac in ADTS': { kind: 'audio', format: 'aac' },
    m4a: { kind: 'audio', format: 'm4a' },
    flac: { kind: 'audio', format: 'flac' },
    wav: { kind: 'audio', format: 'wav' },
    'ogg vorbis': { kind: 'audio', format: 'ogg' },
    'ogg opus': { kind: 'audio', format: 'ogg' },
  })
})

describe('the tracks of files ffmpeg makes', () => {
  test('sound only, moov last or first: soun, and the upload is audio', async () => {
    for (const flags of [[], ['-movflags', '+faststart']]) {
      const bytes = await make(`sound${flags.length}.mp4`, [...sine, '-c:a', 'aac', ...flags])
      const { read, asked } = reader(bytes)
      expect(await isoTrackHandlers(read, bytes.length)).toEqual(['soun'])
      // Box headers and the moov: never the media data.
      expect(asked.reduce((a, b) => a + b, 0)).toBeLessThan(bytes.length / 2)
      expect(await refineKind({ kind: 'video', format: 'mp4' }, read, bytes.length)).toEqual({
        kind: 'audio',
        format: 'm4a',
      })
    }
  })

  test('a video with sound stays a video; so does a video without', async () => {
    const both = await make('both.mp4', [...picture, ...sine, '-c:v', 'libx264', '-c:a', 'aac'])
    expect((await isoTrackHandlers(reader(both).read, both.length))?.sort()).toEqual(['soun', 'vide'])
    const sniffed = { kind: 'video', format: 'mp4' } as const
    expect(await refineKind(sniffed, reader(both).read, both.length)).toBe(sniffed)
    const silent = await make('silent.mp4', [...picture, '-c:v', 'libx264'])
    expect(await refineKind(sniffed, reader(silent).read, silent.length)).toBe(sniffed)
  })
})

describe('the tracks of WebM and Matroska files ffmpeg makes', () => {
  test('sound only (Opus in WebM, as a browser records a voice note; FLAC in Matroska): the upload is audio', async () => {
    const webm = await make('note.webm', [...sine, '-c:a', 'libopus'])
    const { read, asked } = reader(webm)
    expect(await matroskaTrackTypes(read, webm.length)).toEqual([2])
    expect(await refineKind({ kind: 'video', format: 'webm' }, read, webm.length)).toEqual({
      kind: 'audio',
      format: 'webm',
    })
    // Element headers and the Tracks: never the clusters.
    expect(asked.reduce((a, b) => a + b, 0)).toBeLessThan(webm.length / 2)
    const mkv = await make('tone.mkv', [...sine, '-c:a', 'flac'])
    expect(await refineKind({ kind: 'video', format: 'mkv' }, reader(mkv).read, mkv.length)).toEqual({
      kind: 'audio',
      format: 'mkv',
    })
  })

  test('a video with sound stays a video; so does one without sound', async () => {
    const vp8 = ['-c:v', 'libvpx', '-deadline', 'realtime', '-b:v', '100k']
    const both = await make('both.webm', [...picture, ...sine, ...vp8, '-c:a', 'libopus'])
    expect((await matroskaTrackTypes(reader(both).read, both.length))?.sort()).toEqual([1, 2])
    const sniffed = { kind: 'video', format: 'webm' } as const
    expect(await refineKind(sniffed, reader(both).read, both.length)).toBe(sniffed)
    const silent = await make('silent.webm', [...picture, ...vp8])
    expect(await refineKind(sniffed, reader(silent).read, silent.length)).toBe(sniffed)
  })

  test('EBML that lies (a size past the end, no Segment, an unknown-size element first) gives no answer', async () => {
    const webm = await make('lies.webm', [...sine, '-c:a', 'libopus'])
    const cut = webm.slice(0, 40)
    expect(await matroskaTrackTypes(reader(cut).read, cut.length)).toBeNull()
    // The Segment's id overwritten: the EBML header is followed by something else.
    const noSegment = webm.slice()
    const segmentAt = Buffer.from(noSegment).indexOf(Buffer.from([0x18, 0x53, 0x80, 0x67]))
    expect(segmentAt).toBeGreaterThan(0)
    noSegment.fill(0x42, segmentAt, segmentAt + 4)
    expect(await matroskaTrackTypes(reader(noSegment).read, noSegment.length)).toBeNull()
    expect(
      await matroskaTrackTypes(
        reader(new Uint8Array([0x1a, 0x45, 0xdf, 0xa3, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])).read,
        12
      )
    ).toBeNull()
    expect(await refineKind({ kind: 'video', format: 'webm' }, reader(cut).read, cut.length)).toEqual({
      kind: 'video',
      format: 'webm',
    })
  })
})

describe('files whose boxes lie', () => {
  const box = (type: string, payload: Uint8Array, size = 8 + payload.length) => {
    const out = new Uint8Array(8 + payload.length)
    new DataView(out.buffer).setUint32(0, size)
    out.set(new TextEncoder().encode(type), 4)
    out.set(payload, 8)
    return out
  }
  const join = (...parts: Uint8Array[]) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
    let at = 0
    for (const p of parts) {
      out.set(p, at)
      at += p.length
    }
    return out
  }

  test('no moov, a box longer than the file, a box of size 3: no answer (it stays a video)', async () => {
    const ftyp = box('ftyp', new TextEncoder().encode('isom\0\0\0\0isom'))
    for (const bytes of [
      join(ftyp, box('mdat', new Uint8Array(100))),
      join(ftyp, box('mdat', new Uint8Array(10), 1_000_000)),
      join(ftyp, box('free', new Uint8Array(0), 3)),
    ]) {
      expect(await isoTrackHandlers(reader(bytes).read, bytes.length)).toBeNull()
      const sniffed = { kind: 'video', format: 'mp4' } as const
      expect(await refineKind(sniffed, reader(bytes).read, bytes.length)).toBe(sniffed)
    }
  })

  test('a file of nothing but tiny boxes is given up on after a few, not walked to its end', async () => {
    const bytes = join(...Array.from({ length: 10_000 }, () => box('free', new Uint8Array(0))))
    const { read, asked } = reader(bytes)
    expect(await isoTrackHandlers(read, bytes.length)).toBeNull()
    expect(asked.length).toBeLessThanOrEqual(64)
  })

  test('only MP4, MOV, 3GP, WebM and Matroska videos are looked into', async () => {
    const { read, asked } = reader(new Uint8Array(0))
    for (const sniffed of [
      { kind: 'video', format: 'avi' },
      { kind: 'image', format: 'heic' },
      { kind: 'audio', format: 'mp3' },
    ] as const)
      expect(await refineKind(sniffed, read, 0)).toBe(sniffed)
    expect(asked).toEqual([])
  })
})

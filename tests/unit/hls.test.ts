/**
 * The video processor's pure HLS and storyboard code: reading a media playlist, its bit rates, the codecs of an
 * init segment, the master playlist, the storyboard's layout and WebVTT; and the recipe's derived output names.
 * No ffmpeg: the inputs are written here.
 */
import { describe, expect, test } from 'bun:test'
import { Parser } from 'm3u8-parser'
import * as v from 'valibot'
import { VideoRequestSchema, videoOutputsOf, type VideoRequest } from '@app/shared'
import {
  initSegmentCodecs,
  masterPlaylist,
  parseMediaPlaylist,
  planStoryboard,
  segmentBitrates,
  storyboardVtt,
  withTargetDuration,
  type HlsVariant,
} from '../../services/videos/main.ts'

/** What ffmpeg 5.1 writes for a 10 s rung at -hls_time 4, single_file fMP4. */
const MEDIA = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:4
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="hls-360p-media.m4s",BYTERANGE="1373@0"
#EXTINF:4.000000,
#EXT-X-BYTERANGE:234410@1373
hls-360p-media.m4s
#EXTINF:4.000000,
#EXT-X-BYTERANGE:223977@235783
hls-360p-media.m4s
#EXTINF:2.000000,
#EXT-X-BYTERANGE:109630@459760
hls-360p-media.m4s
#EXT-X-ENDLIST
`

describe('parseMediaPlaylist', () => {
  test('reads the header, the init segment and every segment with its byte range', () => {
    expect(parseMediaPlaylist(MEDIA)).toEqual({
      version: 7,
      targetDuration: 4,
      vod: true,
      ended: true,
      map: { uri: 'hls-360p-media.m4s', offset: 0, length: 1373 },
      segments: [
        { uri: 'hls-360p-media.m4s', duration: 4, offset: 1373, length: 234410 },
        { uri: 'hls-360p-media.m4s', duration: 4, offset: 235783, length: 223977 },
        { uri: 'hls-360p-media.m4s', duration: 2, offset: 459760, length: 109630 },
      ],
    })
  })

  test('a byte range without an offset follows the previous segment', () => {
    const text = MEDIA.replace('223977@235783', '223977')
    expect(parseMediaPlaylist(text).segments[1]).toMatchObject({ offset: 235783, length: 223977 })
  })

  test('agrees with m3u8-parser', () => {
    const parser = new Parser()
    parser.push(MEDIA)
    parser.end()
    const ours = parseMediaPlaylist(MEDIA)
    expect(parser.manifest.segments.map((s) => [s.uri, s.duration, s.byterange?.offset, s.byterange?.length])).toEqual(
      ours.segments.map((s) => [s.uri, s.duration, s.offset, s.length])
    )
  })

  test('refuses a segment without a byte range (the bit rates need them)', () => {
    expect(() => parseMediaPlaylist('#EXTM3U\n#EXTINF:4,\nsegment0.m4s\n')).toThrow(/EXT-X-BYTERANGE/)
  })
})

describe('segmentBitrates', () => {
  const playlist = (targetDuration: number, segments: [number, number][]) => ({
    ...parseMediaPlaylist(MEDIA),
    targetDuration,
    segments: segments.map(([duration, length], i) => ({ uri: 'm.m4s', duration, offset: i, length })),
  })

  test('average: all segment bytes over all their seconds; peak: the densest segment; both rounded up', () => {
    const rates = segmentBitrates(parseMediaPlaylist(MEDIA))
    expect(rates.duration).toBe(10)
    expect(rates.average).toBe(Math.ceil(((234410 + 223977 + 109630) * 8) / 10))
    expect(rates.peak).toBe(Math.ceil((234410 * 8) / 4))
  })

  test('peak as RFC 8216 defines it: runs of 0.5 to 1.5 target durations, so a short last segment counts with its neighbour', () => {
    // The 0.5 s last segment alone would be 3.2 Mbit/s; it is shorter than half the target, so it is judged with the
    // segment before it: (600000 + 200000) bytes over 4.5 s.
    const rates = segmentBitrates(
      playlist(4, [
        [4, 400_000],
        [4, 600_000],
        [0.5, 200_000],
      ])
    )
    expect(rates.peak).toBe(Math.ceil((800_000 * 8) / 4.5))
    expect(rates.average).toBe(Math.ceil((1_200_000 * 8) / 8.5))
  })

  test('a clip shorter than half its target duration: its peak is its average', () => {
    const rates = segmentBitrates(playlist(1, [[0.1, 5000]]))
    expect(rates).toEqual({ peak: 400_000, average: 400_000, duration: 0.1 })
  })
})

describe('withTargetDuration', () => {
  test('raises the target to the longest segment rounded up, at least 1 (ffmpeg writes 0 for a 0.5 s clip)', () => {
    const short = MEDIA.replace('#EXT-X-TARGETDURATION:4', '#EXT-X-TARGETDURATION:0')
      .replace(/#EXTINF:4.000000,/g, '#EXTINF:0.5,')
      .replace('#EXTINF:2.000000,', '#EXTINF:0.5,')
    const fixed = withTargetDuration(short, parseMediaPlaylist(short))
    expect(fixed.targetDuration).toBe(1)
    expect(fixed.text).toContain('\n#EXT-X-TARGETDURATION:1\n')
    // ffmpeg rounds 4.5 to 4; every EXTINF must fit under the target.
    const long = MEDIA.replace('#EXTINF:2.000000,', '#EXTINF:4.500000,')
    expect(withTargetDuration(long, parseMediaPlaylist(long)).targetDuration).toBe(5)
    expect(withTargetDuration(MEDIA, parseMediaPlaylist(MEDIA))).toEqual({ text: MEDIA, targetDuration: 4 })
  })
})

/** An ISO BMFF box: size, type, payload. */
function box(type: string, ...payload: Uint8Array[]): Uint8Array {
  const size = 8 + payload.reduce((n, p) => n + p.byteLength, 0)
  const out = new Uint8Array(size)
  new DataView(out.buffer).setUint32(0, size)
  out.set(new TextEncoder().encode(type), 4)
  let at = 8
  for (const p of payload) {
    out.set(p, at)
    at += p.byteLength
  }
  return out
}
const zeros = (n: number) => new Uint8Array(n)
/** A track whose stsd holds one sample entry: fields of `fields` bytes, then the children. */
const track = (entry: string, fields: number, ...children: Uint8Array[]) =>
  box(
    'trak',
    box('tkhd', zeros(84)),
    box(
      'mdia',
      box('minf', box('stbl', box('stsd', zeros(4), Uint8Array.of(0, 0, 0, 1), box(entry, zeros(fields), ...children))))
    )
  )

describe('initSegmentCodecs', () => {
  // avcC: configurationVersion 1, profile 100 (High), constraint flags 0, level 31 (3.1).
  const avcC = box('avcC', Uint8Array.of(1, 0x64, 0x00, 0x1f, 0xff, 0xe1))

  test('H.264 from the avcC box (profile, constraints, level in hex), AAC as mp4a.40.2, video first', () => {
    const init = new Uint8Array([
      ...box('ftyp', new TextEncoder().encode('iso6'), zeros(4)),
      ...box('moov', box('mvhd', zeros(100)), track('mp4a', 28, box('esds', zeros(30))), track('avc1', 78, avcC)),
    ])
    expect(initSegmentCodecs(init)).toEqual(['avc1.64001f', 'mp4a.40.2'])
  })

  test('a rung without audio has no mp4a', () => {
    const init = new Uint8Array([...box('ftyp', zeros(8)), ...box('moov', track('avc1', 78, avcC))])
    expect(initSegmentCodecs(init)).toEqual(['avc1.64001f'])
  })
})

describe('masterPlaylist', () => {
  const variant = (short: number, bandwidth: number, extra: Partial<HlsVariant> = {}): HlsVariant => ({
    uri: `hls-${short}p.m3u8`,
    width: Math.round((short * 16) / 9 / 2) * 2,
    height: short,
    codecs: ['avc1.64001f', 'mp4a.40.2'],
    bandwidth,
    averageBandwidth: Math.round(bandwidth * 0.9),
    frameRate: 30,
    ...extra,
  })

  test('lists the rung nearest 720p first (where players start), then the rest by bandwidth', () => {
    const text = masterPlaylist([
      variant(1080, 5_000_000),
      variant(360, 800_000),
      variant(720, 2_500_000, { frameRate: 29.97 }),
    ])
    expect(text).toBe(
      [
        '#EXTM3U',
        '#EXT-X-VERSION:7',
        '#EXT-X-INDEPENDENT-SEGMENTS',
        '#EXT-X-STREAM-INF:BANDWIDTH=2500000,AVERAGE-BANDWIDTH=2250000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2",FRAME-RATE=29.970',
        'hls-720p.m3u8',
        '#EXT-X-STREAM-INF:BANDWIDTH=800000,AVERAGE-BANDWIDTH=720000,RESOLUTION=640x360,CODECS="avc1.64001f,mp4a.40.2",FRAME-RATE=30.000',
        'hls-360p.m3u8',
        '#EXT-X-STREAM-INF:BANDWIDTH=5000000,AVERAGE-BANDWIDTH=4500000,RESOLUTION=1920x1080,CODECS="avc1.64001f,mp4a.40.2",FRAME-RATE=30.000',
        'hls-1080p.m3u8',
        '',
      ].join('\n')
    )
  })

  test('measures portrait rungs by their short side; a lone rung is listed; an unknown frame rate is left out', () => {
    const portrait = masterPlaylist([
      variant(240, 300_000, { width: 240, height: 426 }),
      variant(480, 900_000, { width: 480, height: 854, frameRate: 0 }),
    ])
    expect(portrait.split('\n').filter((l) => l.endsWith('.m3u8'))).toEqual(['hls-480p.m3u8', 'hls-240p.m3u8'])
    expect(portrait).toContain('RESOLUTION=480x854,CODECS="avc1.64001f,mp4a.40.2"\n')
    expect(masterPlaylist([variant(360, 1000, { codecs: ['avc1.64001e'] })])).toContain('CODECS="avc1.64001e"')
  })

  test('its version is at least the media playlists', () => {
    expect(masterPlaylist([variant(360, 1000)], 8)).toContain('#EXT-X-VERSION:8\n')
    expect(masterPlaylist([variant(360, 1000)], 3)).toContain('#EXT-X-VERSION:7\n')
  })

  test('m3u8-parser reads it back', () => {
    const parser = new Parser()
    parser.push(masterPlaylist([variant(360, 800_000), variant(720, 2_500_000)]))
    parser.end()
    expect(parser.manifest.independentSegments).toBe(true)
    expect(
      parser.manifest.playlists?.map((p) => [
        p.uri,
        p.attributes.BANDWIDTH,
        p.attributes.RESOLUTION,
        p.attributes.CODECS,
      ])
    ).toEqual([
      ['hls-720p.m3u8', 2_500_000, { width: 1280, height: 720 }, 'avc1.64001f,mp4a.40.2'],
      ['hls-360p.m3u8', 800_000, { width: 640, height: 360 }, 'avc1.64001f,mp4a.40.2'],
    ])
  })
})

describe('planStoryboard', () => {
  test('one frame a second up to 100 s, then fewer, so the video always fits in 100 frames, 10 to a row', () => {
    expect(planStoryboard(10, { width: 1280, height: 720 })).toEqual({
      interval: 1,
      tiles: 10,
      columns: 10,
      rows: 1,
      tileWidth: 160,
      tileHeight: 90,
    })
    expect(planStoryboard(100, { width: 1280, height: 720 })).toMatchObject({ interval: 1, tiles: 100, rows: 10 })
    expect(planStoryboard(101, { width: 1280, height: 720 })).toMatchObject({ interval: 2, tiles: 51, rows: 6 })
    expect(planStoryboard(7200, { width: 1280, height: 720 })).toMatchObject({ interval: 72, tiles: 100, rows: 10 })
  })

  test('a clip shorter than a second gets one frame', () => {
    expect(planStoryboard(0.5, { width: 320, height: 240 })).toMatchObject({
      interval: 1,
      tiles: 1,
      columns: 1,
      rows: 1,
    })
  })

  test('frames are `width` wide (never wider than the picture), as tall as the aspect says, even', () => {
    expect(planStoryboard(10, { width: 1080, height: 1920 })).toMatchObject({ tileWidth: 160, tileHeight: 284 })
    expect(planStoryboard(10, { width: 1280, height: 720 }, 320)).toMatchObject({ tileWidth: 320, tileHeight: 180 })
    expect(planStoryboard(10, { width: 160, height: 120 }, 320)).toMatchObject({ tileWidth: 160, tileHeight: 120 })
    expect(planStoryboard(10, { width: 161, height: 121 })).toMatchObject({ tileWidth: 160, tileHeight: 120 })
  })
})

/** The cues of a storyboard WebVTT: times in seconds and the region. */
function cuesOf(text: string) {
  const seconds = (t: string) => {
    const [h, m, s] = t.split(':')
    return Number(h) * 3600 + Number(m) * 60 + Number(s)
  }
  expect(text.startsWith('WEBVTT\n\n')).toBe(true)
  return text
    .slice('WEBVTT\n\n'.length)
    .trim()
    .split('\n\n')
    .map((cue) => {
      const [times, target] = cue.split('\n')
      const [start, end] = times!.split(' --> ')
      expect(start).toMatch(/^\d\d:\d\d:\d\d\.\d{3}$/)
      expect(end).toMatch(/^\d\d:\d\d:\d\d\.\d{3}$/)
      const [file, xywh] = target!.split('#xywh=')
      const [x, y, w, h] = xywh!.split(',').map(Number)
      return { start: seconds(start!), end: seconds(end!), file, x: x!, y: y!, w: w!, h: h! }
    })
}

describe('storyboardVtt', () => {
  test('cues cover [0, duration] exactly, each pointing at its frame inside the sprite', () => {
    for (const duration of [0.5, 1, 9.984, 10, 10.006, 99.5, 250, 3723.5]) {
      const plan = planStoryboard(duration, { width: 1280, height: 720 })
      const cues = cuesOf(storyboardVtt(plan, 'storyboard-sprite.jpg', plan.tiles, duration))
      expect(cues[0]!.start).toBe(0)
      expect(cues.at(-1)!.end).toBeCloseTo(duration, 3)
      for (const [i, cue] of cues.entries()) {
        if (i > 0) expect(cue.start).toBe(cues[i - 1]!.end)
        expect(cue.end).toBeGreaterThan(cue.start)
        expect(cue.file).toBe('storyboard-sprite.jpg')
        expect(cue).toMatchObject({ w: plan.tileWidth, h: plan.tileHeight })
        expect(cue.x + cue.w).toBeLessThanOrEqual(plan.columns * plan.tileWidth)
        expect(cue.y + cue.h).toBeLessThanOrEqual(plan.rows * plan.tileHeight)
      }
      expect(cues.length).toBeLessThanOrEqual(plan.tiles)
    }
  })

  test('writes hours, minutes, seconds and milliseconds', () => {
    const plan = planStoryboard(3723.5, { width: 1280, height: 720 })
    const text = storyboardVtt(plan, 's.jpg', plan.tiles, 3723.5)
    expect(text).toContain('\n00:00:38.000 --> 00:01:16.000\ns.jpg#xywh=160,0,160,90\n')
    // 38 s apart: the 98th frame, in the 10th row, starts at 3686 s.
    expect(text.endsWith('\n01:01:26.000 --> 01:02:03.500\ns.jpg#xywh=1120,810,160,90\n')).toBe(true)
  })

  test('uses only the frames the sprite holds: with fewer, the last one runs to the end', () => {
    const plan = planStoryboard(10, { width: 1280, height: 720 })
    const cues = cuesOf(storyboardVtt(plan, 's.jpg', 7, 10))
    expect(cues).toHaveLength(7)
    expect(cues.at(-1)).toMatchObject({ start: 6, end: 10, x: 960, y: 0 })
  })

  test('a frame past the duration gets no cue', () => {
    // Planned from the probe (10.4 s: 11 frames), the rendition lasts 9.98 s.
    const plan = planStoryboard(10.4, { width: 1280, height: 720 })
    const cues = cuesOf(storyboardVtt(plan, 's.jpg', 11, 9.98))
    expect(cues).toHaveLength(10)
    expect(cues.at(-1)).toMatchObject({ start: 9, end: 9.98 })
  })
})

describe('a video recipe’s outputs', () => {
  const request = (recipe: Partial<VideoRequest['recipe']>) => ({
    version: 1,
    jobId: crypto.randomUUID(),
    mediaId: crypto.randomUUID(),
    source: { bucket: 'media', key: 'originals/a', format: 'mp4', size: 1000 },
    output: { bucket: 'media', prefix: 'outputs/a' },
    recipe: {
      poster: { name: 'poster', width: 1280, height: 1280 },
      renditions: [
        { name: '360p', height: 360 },
        { name: '720p', height: 720 },
      ],
      ...recipe,
    },
  })
  const issues = (recipe: Partial<VideoRequest['recipe']>) =>
    (v.safeParse(VideoRequestSchema, request(recipe)).issues ?? []).map((i) => i.message)

  test('lists the poster, the MP4s, the master and each rung’s playlist and media, the storyboard and its sprite', () => {
    const { recipe } = request({ hls: { name: 'hls' }, storyboard: { name: 'storyboard' } })
    expect(videoOutputsOf(recipe)).toEqual([
      { name: 'poster', format: 'webp' },
      { name: '360p', format: 'mp4' },
      { name: '720p', format: 'mp4' },
      { name: 'hls', format: 'm3u8' },
      { name: 'hls-360p', format: 'm3u8' },
      { name: 'hls-360p-media', format: 'm4s' },
      { name: 'hls-720p', format: 'm3u8' },
      { name: 'hls-720p-media', format: 'm4s' },
      { name: 'storyboard', format: 'vtt' },
      { name: 'storyboard-sprite', format: 'jpeg' },
    ])
    expect(videoOutputsOf({ ...recipe, mp4: false }).map((o) => o.format)).not.toContain('mp4')
    expect(issues({ hls: { name: 'hls', segmentSeconds: 6 }, storyboard: { name: 'sb', width: 320 } })).toEqual([])
  })

  test('refuses a recipe without MP4s or HLS, derived names over 32 characters, and names that collide', () => {
    expect(issues({ mp4: false })).toEqual(['a recipe without MP4 renditions (mp4: false) must ask for hls'])
    // <hls>-360p is 32 characters, <hls>-360p-media 38.
    expect(issues({ hls: { name: 'a'.repeat(27) } })).toEqual([
      `the output name ${'a'.repeat(27)}-360p-media is longer than 32 characters`,
      `the output name ${'a'.repeat(27)}-720p-media is longer than 32 characters`,
    ])
    expect(issues({ storyboard: { name: 'b'.repeat(26) } })).toEqual([
      `the output name ${'b'.repeat(26)}-sprite is longer than 32 characters`,
    ])
    const renditions = [
      { name: '360p', height: 360 },
      { name: 'hls-360p', height: 720 },
    ]
    expect(issues({ renditions, hls: { name: 'hls' } })).toEqual([
      'two outputs would be named hls-360p: give them names of their own',
    ])
    expect(issues({ poster: { name: 'sb-sprite', width: 64, height: 64 }, storyboard: { name: 'sb' } })).toEqual([
      'two outputs would be named sb-sprite: give them names of their own',
    ])
  })

  test('takes only the segment lengths that are whole keyframe intervals, and storyboard widths of 64-320', () => {
    expect(issues({ hls: { name: 'hls', segmentSeconds: 3 as never } })).not.toEqual([])
    expect(issues({ storyboard: { name: 'sb', width: 32 } })).not.toEqual([])
    expect(issues({ storyboard: { name: 'sb', width: 321 } })).not.toEqual([])
  })
})

/**
 * Playback's pure parts: every address in an HLS playlist or a storyboard is rewritten (and one that names nothing
 * of the media refuses the playlist), the console reads a storyboard into frames, and playback links last long
 * enough for the video. The served whole is tests/playback.test.ts.
 */
import { describe, expect, test } from 'bun:test'
import { frameAt, parseStoryboard } from '../../services/api/console/src/storyboard.ts'
import { addressesOf } from '../../services/api/playback/addresses.ts'
import { playbackSeconds } from '../../services/api/playback/playback.ts'
import { UnknownAddress, rewriteM3u8, rewriteVtt } from '../../services/api/playback/playlists.ts'
import type { MediaRecord } from '../../services/api/store/media.ts'

const MASTER = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=1500000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2"
hls-720p.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=500000,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2"
hls-360p.m3u8
`
const MEDIA = [
  '#EXTM3U',
  '#EXT-X-VERSION:7',
  '#EXT-X-TARGETDURATION:4',
  '#EXT-X-PLAYLIST-TYPE:VOD',
  '#EXT-X-MAP:URI="hls-360p-media.m4s",BYTERANGE="812@0"',
  '#EXTINF:4.000000,',
  '#EXT-X-BYTERANGE:90000@812',
  'hls-360p-media.m4s',
  '#EXTINF:2.000000,',
  '#EXT-X-BYTERANGE:40000@90812',
  'hls-360p-media.m4s',
  '#EXT-X-ENDLIST',
  '',
].join('\r\n')

const known: Record<string, string> = {
  'hls-720p.m3u8': 'L720',
  'hls-360p.m3u8': 'L360',
  'hls-360p-media.m4s': 'SEG',
  'storyboard-sprite.jpg': 'SPRITE',
}
const resolve = (uri: string) => known[uri] ?? null

describe('rewriting a playlist', () => {
  test('every URI line and URI attribute is rewritten; tags, byte ranges and line ends stay', () => {
    expect(rewriteM3u8(MASTER, resolve)).toBe(MASTER.replace('hls-720p.m3u8', 'L720').replace('hls-360p.m3u8', 'L360'))
    const media = rewriteM3u8(MEDIA, resolve)
    expect(media).toContain('#EXT-X-MAP:URI="SEG",BYTERANGE="812@0"\r\n')
    expect(media.split('\r\n').filter((l) => l === 'SEG')).toHaveLength(2)
    expect(media).toContain('#EXT-X-BYTERANGE:40000@90812\r\n')
    expect(media).not.toContain('m4s')
  })

  test('an address that names nothing of the media (elsewhere, a path, another name) refuses the playlist', () => {
    for (const uri of ['https://evil.example/x.m4s', '../other/hls-360p-media.m4s', 'hls-1080p.m3u8', '/abs.m4s'])
      expect(() => rewriteM3u8(`#EXTM3U\n#EXT-X-MAP:URI="${uri}"\n`, resolve)).toThrow(UnknownAddress)
    expect(() => rewriteM3u8(MASTER.replace('hls-360p.m3u8', 'nope.m3u8'), resolve)).toThrow(UnknownAddress)
  })
})

describe('rewriting a storyboard', () => {
  const vtt = [
    'WEBVTT',
    '',
    '00:00:00.000 --> 00:00:05.000',
    'storyboard-sprite.jpg#xywh=0,0,160,90',
    '',
    '00:00:05.000 --> 00:00:07.500',
    'storyboard-sprite.jpg#xywh=160,0,160,90',
    '',
    'NOTE words that are not an address stay',
    '',
    '00:00:07.500 --> 00:00:08.000',
    'a subtitle line',
    '',
  ].join('\n')

  test('cue addresses are rewritten with their fragment kept; other text is left alone', () => {
    const out = rewriteVtt(vtt, resolve)
    expect(out).toContain('00:00:00.000 --> 00:00:05.000\nSPRITE#xywh=0,0,160,90\n')
    expect(out).toContain('SPRITE#xywh=160,0,160,90')
    expect(out).toContain('NOTE words that are not an address stay')
    expect(out).toContain('a subtitle line')
    expect(out).not.toContain('storyboard-sprite.jpg')
  })

  test('the console reads the frames back, resolved against the VTT, and finds the one for a time', () => {
    const frames = parseStoryboard(
      rewriteVtt(vtt, (uri) => (uri === 'storyboard-sprite.jpg' ? 'storyboard-sprite?expires=9&signature=s' : null)),
      'https://api.example/v1/links/m/storyboard?expires=9&signature=t'
    )
    expect(frames).toHaveLength(2)
    expect(frames[1]).toEqual({
      start: 5,
      end: 7.5,
      url: 'https://api.example/v1/links/m/storyboard-sprite?expires=9&signature=s',
      x: 160,
      y: 0,
      w: 160,
      h: 90,
    })
    expect(frameAt(frames, 4.99)).toBe(frames[0])
    expect(frameAt(frames, 5)).toBe(frames[1])
    expect(frameAt(frames, 99)).toBe(frames[1])
    expect(frameAt(frames, -1)).toBe(frames[0])
  })
})

const media = (outputs: Partial<MediaRecord['outputs'][number]>[], durationSeconds = 10) =>
  ({
    id: '00000000-0000-4000-8000-000000000001',
    kind: 'video',
    metadata: { durationSeconds },
    outputs: outputs.map((o) => ({ size: 1, width: 1, height: 1, ...o })),
  }) as unknown as MediaRecord

describe('addresses', () => {
  const outputs = [
    { name: 'hls', key: 'sys/outputs/job/hls.m3u8', contentType: 'application/vnd.apple.mpegurl' },
    { name: 'hls-360p-media', key: 'sys/outputs/job/hls-360p-media.m4s', contentType: 'video/mp4' },
  ]
  const links = { sign: async (id: string, name: string, at: number) => `expires=${at}&signature=${name}-${id.at(-1)}` }

  test('under the key: the file names as they are, beside the playlist', async () => {
    const resolve = await addressesOf(media(outputs), { kind: 'keyed' })
    expect(resolve('hls-360p-media.m4s')).toBe('hls-360p-media.m4s')
    expect(resolve('hls-360p-media')).toBeNull()
  })

  test('through a link: each output signed with the same expiry; presigned for bytes when the store serves them', async () => {
    const linked = await addressesOf(media(outputs), { kind: 'linked', expiresAt: 123, links })
    // The extension stays: players judge a segment by it.
    expect(linked('hls.m3u8')).toBe('hls.m3u8?expires=123&signature=hls-1')
    expect(linked('hls-360p-media.m4s')).toBe('hls-360p-media.m4s?expires=123&signature=hls-360p-media-1')
    const seconds: number[] = []
    const presign = async (key: string, s: number) => {
      seconds.push(s)
      return `https://store.example/${key}?X-Amz-Expires=${s}`
    }
    const expiresAt = Math.floor(Date.now() / 1000) + 600
    const stored = await addressesOf(media(outputs), { kind: 'linked', expiresAt, links, presign })
    // Playlists still come from the API (they need rewriting); bytes from the store, for as long as the link lasts.
    expect(stored('hls.m3u8')).toBe(`hls.m3u8?expires=${expiresAt}&signature=hls-1`)
    expect(stored('hls-360p-media.m4s')).toStartWith('https://store.example/sys/outputs/job/hls-360p-media.m4s?')
    expect(seconds[0]).toBeGreaterThanOrEqual(599)
    expect(seconds[0]).toBeLessThanOrEqual(600)
  })
})

test('playback links last an hour, or twice a long video, within the longest a link may last', () => {
  expect(playbackSeconds(media([], 10))).toBe(3600)
  expect(playbackSeconds(media([], 5400))).toBe(10_800)
  expect(playbackSeconds(media([], 10 * 86_400))).toBe(7 * 86_400)
})

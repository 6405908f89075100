/**
 * The video processor's pure rules: which rungs to make and at what size, the poster's size, and the transcode's
 * keyframes (the command is built, not run).
 */
import { describe, expect, test } from 'bun:test'
import { ffmpegArgv } from '@app/shared/processor'
import {
  keyframeFrames,
  planRenditions,
  planStoryboard,
  posterSize,
  transcodeCommand,
  type Probed,
} from '../../services/videos/main.ts'

const LADDER = [
  { name: '360p', height: 360 },
  { name: '720p', height: 720 },
  { name: '1080p', height: 1080 },
]

describe('planRenditions', () => {
  test('makes the rungs at or below the source short side, at the aspect of the source', () => {
    expect(planRenditions(LADDER, { width: 1920, height: 1080 })).toEqual([
      { name: '360p', width: 640, height: 360 },
      { name: '720p', width: 1280, height: 720 },
      { name: '1080p', width: 1920, height: 1080 },
    ])
    expect(planRenditions(LADDER, { width: 1280, height: 720 }).map((r) => r.name)).toEqual(['360p', '720p'])
  })

  test('measures a portrait video by its short side, so it stays portrait', () => {
    expect(planRenditions(LADDER, { width: 1080, height: 1920 })).toEqual([
      { name: '360p', width: 360, height: 640 },
      { name: '720p', width: 720, height: 1280 },
      { name: '1080p', width: 1080, height: 1920 },
    ])
  })

  test('always makes the smallest rung, at source size (never upscaled) when the source is smaller', () => {
    expect(planRenditions(LADDER, { width: 426, height: 240 })).toEqual([{ name: '360p', width: 426, height: 240 }])
  })

  test('keeps every side even and within the source', () => {
    for (const display of [
      { width: 161, height: 121 },
      { width: 853, height: 480 },
      { width: 3, height: 3 },
    ]) {
      for (const r of planRenditions(LADDER, display)) {
        expect((r.width % 2) + (r.height % 2)).toBe(0)
        expect(r.width).toBeLessThanOrEqual(Math.max(2, display.width))
        expect(r.height).toBeLessThanOrEqual(Math.max(2, display.height))
      }
    }
  })
})

describe('posterSize', () => {
  test('fits the box, keeps the aspect, never upscales', () => {
    expect(posterSize({ width: 1280, height: 1280 }, { width: 1920, height: 1080 })).toEqual({
      width: 1280,
      height: 720,
    })
    expect(posterSize({ width: 1280, height: 1280 }, { width: 1080, height: 1920 })).toEqual({
      width: 720,
      height: 1280,
    })
    expect(posterSize({ width: 1280, height: 1280 }, { width: 320, height: 240 })).toEqual({ width: 320, height: 240 })
  })
})

describe('the transcode', () => {
  const probed: Probed = {
    metadata: {
      container: 'mp4',
      durationSeconds: 10,
      width: 1280,
      height: 720,
      frameRate: 29.97,
      videoCodec: 'h264',
      audioCodec: 'aac',
      bitrate: 1_000_000,
      rotation: 0,
    },
    demuxer: 'mov',
    videoIndex: 0,
    encodeFrameRate: 30000 / 1001,
    audio: { index: 1, channels: 2 },
    color: {},
  }
  const plan = planRenditions(
    [
      { name: '360p', height: 360 },
      { name: '720p', height: 720 },
    ],
    probed.metadata
  ).map((p) => ({ ...p, file: `/work/${p.name}.mp4` }))
  const limits = { maxSeconds: 3600, maxPixels: 4096 * 2160 }

  test('keyframes every 2 s of time on every rung, none at scene cuts, none between', async () => {
    const run = await transcodeCommand('/work/original', probed, plan, limits)
    expect(run.outputs).toHaveLength(2)
    for (const output of run.outputs) {
      const option = (name: string) => output.options[output.options.indexOf(name) + 1]
      expect(option('-force_key_frames')).toBe('expr:gte(t,n_forced*2)')
      expect(option('-sc_threshold')).toBe('0')
      expect([option('-g'), option('-keyint_min')]).toEqual(['60', '60'])
    }
  })

  test('the keyframe interval in frames: 2 s at the encoded rate, rounded up; 60 fps worth when unknown', () => {
    expect([30, 30000 / 1001, 24000 / 1001, 25, 25.2, 60, 0].map(keyframeFrames)).toEqual([
      60, 60, 48, 50, 51, 120, 120,
    ])
  })

  test('the storyboard is one more branch of the split, written as one JPEG', async () => {
    const storyboard = { plan: planStoryboard(10, plan[1]!), sprite: '/work/sb-sprite.jpg', tiles: '/work/.tiles' }
    const run = await transcodeCommand('/work/original', probed, plan, limits, storyboard)
    expect(run.filterGraph).toContain('split=3[s0][s1][s2];')
    expect(run.filterGraph).toContain(
      '[s2]fps=1/1:round=up,scale=160:90,setsar=1,format=yuvj420p,trim=end_frame=10,metadata=mode=add:key=tile:value=1,metadata=mode=print:file=/work/.tiles,tile=10x1[sb]'
    )
    expect(ffmpegArgv(run).slice(-16)).toEqual([
      '-map',
      '[sb]',
      '-frames:v',
      '1',
      '-c:v',
      'mjpeg',
      '-q:v',
      '5',
      '-map_metadata',
      '-1',
      '-f',
      'image2',
      '-update',
      '1',
      '-y',
      '/work/sb-sprite.jpg',
    ])
  })
})

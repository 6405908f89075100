/** The video processor's pure rules: which rungs to make and at what size, and the poster's size. */
import { describe, expect, test } from 'bun:test'
import { planRenditions, posterSize } from '../../services/videos/main.ts'

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

/**
 * Storyboards: the WebVTT file a video's playback links name, whose cues map time ranges to regions of one sprite
 * (`<url>#xywh=x,y,w,h`), read into frames a seek bar shows as the pointer moves over it.
 */

export interface Frame {
  start: number
  end: number
  /** The sprite's address, resolved against the VTT's. */
  url: string
  x: number
  y: number
  w: number
  h: number
}

const TIMING = /^\s*((?:\d+:)?\d\d:\d\d\.\d{3})\s+-->\s+((?:\d+:)?\d\d:\d\d\.\d{3})/

/** `HH:MM:SS.mmm` or `MM:SS.mmm` in seconds. */
const clock = (text: string) => text.split(':').reduce((total, part) => total * 60 + Number(part), 0)

/** The storyboard's frames, in order; lines that are not a storyboard cue are skipped. */
export function parseStoryboard(vtt: string, base: string): Frame[] {
  const frames: Frame[] = []
  const lines = vtt.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const timing = TIMING.exec(lines[i]!)
    const target = /^(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)$/.exec(lines[i + 1]?.trim() ?? '')
    if (!timing || !target) continue
    frames.push({
      start: clock(timing[1]!),
      end: clock(timing[2]!),
      url: new URL(target[1]!, base).href,
      x: Number(target[2]),
      y: Number(target[3]),
      w: Number(target[4]),
      h: Number(target[5]),
    })
  }
  return frames
}

/** The frame shown at `time`: the cue that holds it, or the nearest one at either end. */
export function frameAt(frames: Frame[], time: number): Frame | undefined {
  return frames.find((f) => time >= f.start && time < f.end) ?? (time < 0 ? frames[0] : frames.at(-1))
}

/** The shared media corpus: its manifest, read from CORPUS_DIR (the corpus suite refuses to run without it). */
import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

export interface CorpusEntry {
  file: string
  kind: 'image' | 'video' | 'audio'
  bytes: number
  expected: {
    format: string | null
    width: number | null
    height: number | null
    display_width?: number | null
    display_height?: number | null
    orientation?: number | null
    rotation?: number | null
    duration_s?: number | null
    video_codec?: string | null
    audio_codec?: string | null
    valid: boolean
    sharp_decode?: string
    notes: string
  }
}

export function loadCorpus(): { dir: string; entries: CorpusEntry[] } {
  const dir = process.env.CORPUS_DIR
  if (!dir) throw new Error('the corpus suite needs CORPUS_DIR, e.g. CORPUS_DIR=../shared/corpus bun run test:corpus')
  const root = resolve(dir)
  return { dir: root, entries: JSON.parse(readFileSync(join(root, 'manifest.json'), 'utf8')) as CorpusEntry[] }
}

/** The size of a `width`×`height` picture fitted inside a `box`×`box` square, never enlarged. */
export function fitInside(width: number, height: number, box: number): [number, number] {
  const scale = Math.min(1, box / width, box / height)
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))]
}

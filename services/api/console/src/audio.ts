/**
 * The player of a sound's page: its encodings as the sources of an <audio> (AAC plays everywhere, Opus is smaller;
 * the browser takes the first it can play), its cover art when the file had one, and its waveform drawn from the
 * peaks the processor made (audiowaveform JSON), the part already played in the accent colour. Clicking the waveform
 * seeks. Everything comes from the media's playback links: signed, so no key is sent.
 */
import { api, read, type Media, type Playback, type Problem } from './api.ts'
import { h } from './dom.ts'

/** What the waveform needs of a peaks file: min/max pairs, 8- or 16-bit. */
export interface Peaks {
  bits: number
  length: number
  data: number[]
}

export function audioPlayer(media: Media, options: { signal: AbortSignal; say: (text: string) => void }) {
  const { signal, say } = options
  const audio = h('audio', {
    controls: true,
    preload: 'metadata',
    'aria-label': `Audio: ${media.filename ?? 'the sound'}`,
  })
  const canvas = h('canvas', { class: 'waveform', width: 960, height: 120, role: 'img', 'aria-label': 'Waveform' })
  const cover = h('img', { class: 'cover', alt: `Cover art of ${media.filename ?? 'the sound'}`, hidden: true })
  const figure = h('figure', { class: 'stage sound' }, cover, canvas, audio)
  let peaks: Peaks | null = null
  const redraw = () => peaks && drawWaveform(canvas, peaks, audio.duration ? audio.currentTime / audio.duration : 0)
  audio.addEventListener('timeupdate', redraw)
  audio.addEventListener('seeked', redraw)
  canvas.addEventListener('click', (event) => {
    if (!audio.duration) return
    const box = canvas.getBoundingClientRect()
    audio.currentTime = ((event.clientX - box.left) / box.width) * audio.duration
  })

  async function start() {
    const playback = await read<Playback>(
      await api.v1.media[':id'].playback.$get({ param: { id: media.id }, query: {} }, { init: { signal } })
    )
    for (const encoding of playback.audio) audio.append(h('source', { src: encoding.url, type: encoding.contentType }))
    audio.load()
    if (playback.poster) {
      cover.src = playback.poster
      cover.hidden = false
    }
    if (playback.peaks) {
      const res = await fetch(playback.peaks, { signal })
      if (!res.ok) throw new Error(`the waveform could not be loaded (HTTP ${res.status})`)
      peaks = (await res.json()) as Peaks
      figure.dataset.peaks = String(peaks.length)
      redraw()
    }
  }
  start().catch((error: Problem) => {
    if (!signal.aborted) say(`The sound could not be loaded: ${error.message}`)
  })
  return figure
}

/** Draws each column's min/max as a bar, scaled to the canvas; columns before `played` (0-1) in the accent colour. */
export function drawWaveform(canvas: HTMLCanvasElement, peaks: Peaks, played: number) {
  const context = canvas.getContext('2d')
  if (!context || !peaks.length) return
  const { width, height } = canvas
  const accent = getComputedStyle(canvas).getPropertyValue('--accent').trim() || '#1d4ed8'
  const full = 2 ** (peaks.bits - 1)
  context.clearRect(0, 0, width, height)
  for (let x = 0; x < width; x++) {
    // The pairs this column covers: their lowest min and highest max.
    const first = Math.floor((x / width) * peaks.length)
    const last = Math.max(first + 1, Math.floor(((x + 1) / width) * peaks.length))
    let low = 0
    let high = 0
    for (let i = first; i < last && i < peaks.length; i++) {
      low = Math.min(low, peaks.data[2 * i]!)
      high = Math.max(high, peaks.data[2 * i + 1]!)
    }
    const top = height / 2 - (high / full) * (height / 2)
    const bottom = height / 2 - (low / full) * (height / 2)
    context.fillStyle = x / width < played ? accent : '#6b7280'
    context.fillRect(x, top, 1, Math.max(1, bottom - top))
  }
}

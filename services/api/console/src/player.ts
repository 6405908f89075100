/**
 * The video player of a media's page. It plays from the media's playback links (GET /v1/media/{id}/playback: signed,
 * so the browser fetches every playlist, segment and picture without the key):
 * - HLS through hls.js where the browser has Media Source Extensions (hls.js is its own chunk, loaded only here);
 * - HLS natively where it has not but plays HLS itself (Safari on iOS);
 * - the progressive MP4s otherwise, and for a video made before streaming existed.
 * The quality menu is "Auto" (the player follows the network) plus each rung. Under the video, a seek bar shows the
 * storyboard's frame for the time under the pointer.
 */
import type HlsType from 'hls.js'
import { api, read, type Playback, type Problem } from './api.ts'
import { bytes, fill, h } from './dom.ts'
import { frameAt, parseStoryboard, type Frame } from './storyboard.ts'
import type { Media } from './api.ts'

/** How the video is being played: what the page says, and what a test can check. */
type Engine = 'hls.js' | 'native' | 'mp4'

const SEEK_STEPS = 1000
const AUTO = 'auto'

export function videoPlayer(media: Media, options: { signal: AbortSignal; say: (text: string) => void }) {
  const { signal, say } = options
  const largest = media.outputs.reduce<{ width: number; height: number } | undefined>(
    (a, o) =>
      o.contentType === 'video/mp4' && o.width && o.height && (!a || o.width * o.height > a.width * a.height)
        ? { width: o.width, height: o.height }
        : a,
    undefined
  )
  const video = h('video', {
    controls: true,
    preload: 'metadata',
    playsinline: true,
    ...(largest ? { width: largest.width, height: largest.height } : {}),
    'aria-label': `Video: ${media.filename ?? 'the video'}`,
  })
  const quality = h('select', { id: 'quality', disabled: true }, h('option', { value: AUTO }, 'Loading…'))
  const seek = h('input', {
    type: 'range',
    id: 'seek',
    min: 0,
    max: SEEK_STEPS,
    step: 1,
    value: 0,
    disabled: true,
    'aria-label': 'Seek',
  })
  const frame = h('div', { class: 'scrub-frame' })
  const at = h('span', { class: 'scrub-time' })
  const preview = h('div', { class: 'scrub-preview', hidden: true, 'aria-hidden': 'true' }, frame, at)
  const mode = h('span', { class: 'hint', id: 'player-mode' })
  const figure = h(
    'figure',
    { class: 'stage player' },
    video,
    h('div', { class: 'scrub' }, seek, preview),
    h('figcaption', null, h('label', { for: 'quality' }, 'Quality '), quality, ' ', mode)
  )
  const engine = (name: Engine, text: string) => {
    figure.dataset.engine = name
    mode.textContent = text
  }

  scrubbing(video, seek, preview, frame, at, () => frames)
  let frames: Frame[] = []

  async function start() {
    const playback = await read<Playback>(
      await api.v1.media[':id'].playback.$get({ param: { id: media.id }, query: {} }, { init: { signal } })
    )
    if (playback.poster) video.poster = playback.poster
    if (playback.storyboard) void loadStoryboard(playback.storyboard)
    if (playback.hls && hasMediaSource()) {
      const { default: Hls } = await import('hls.js/light')
      if (Hls.isSupported()) return withHlsJs(Hls, playback.hls)
    }
    if (playback.hls && video.canPlayType('application/vnd.apple.mpegurl')) return natively(playback)
    if (playback.downloads.length) return progressive(playback)
    say('This video has nothing this browser can play.')
  }

  function withHlsJs(Hls: typeof HlsType, url: string) {
    // No worker: the page's policy allows no blob: workers, and fMP4 segments need no transmuxing anyway.
    const hls = new Hls({ enableWorker: false })
    signal.addEventListener('abort', () => hls.destroy(), { once: true })
    let recovered = false
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      options_(
        [AUTO, 'Auto'],
        hls.levels.map((level, i) => [String(i), `${level.height}p · ${kbps(level.bitrate)}`] as [string, string])
      )
    })
    hls.on(Hls.Events.LEVEL_SWITCHED, (_, data) => {
      const level = hls.levels[data.level]
      if (!level) return
      figure.dataset.level = String(level.height)
      engine(
        'hls.js',
        `Streaming (hls.js), now ${level.height}p${hls.autoLevelEnabled ? ', chosen by the network' : ''}`
      )
    })
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (!data.fatal) return
      // A decoding hiccup is worth one recovery; anything else (a link expired: 403) ends playback with a reason.
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !recovered) {
        recovered = true
        hls.recoverMediaError()
        return
      }
      say(`The stream stopped: ${data.details}${data.response?.code ? ` (HTTP ${data.response.code})` : ''}`)
      hls.destroy()
    })
    quality.onchange = () => {
      // -1 hands the choice back to the player; a rung switches now (buffered video of the old rung is dropped).
      hls.currentLevel = quality.value === AUTO ? -1 : Number(quality.value)
    }
    engine('hls.js', 'Streaming (hls.js)')
    hls.loadSource(url)
    hls.attachMedia(video)
  }

  /** Native HLS picks rungs itself; choosing one plays that rung's MP4 download instead, from the same time. */
  function natively(playback: Playback) {
    engine('native', 'Streaming (the browser’s own HLS)')
    video.src = playback.hls!
    const downloads = playback.downloads
    options_(
      [AUTO, 'Auto'],
      downloads.map((d, i) => [String(i), `${d.name}: ${d.width}×${d.height}, ${bytes(d.size)}`] as [string, string])
    )
    quality.onchange = () => {
      const chosen = quality.value === AUTO ? null : downloads[Number(quality.value)]!
      switchSource(chosen ? chosen.url : playback.hls!)
      engine(chosen ? 'mp4' : 'native', chosen ? `Playing the ${chosen.name} MP4` : 'Streaming (the browser’s own HLS)')
    }
  }

  function progressive(playback: Playback) {
    const downloads = playback.downloads
    options_(
      null,
      downloads.map((d, i) => [String(i), `${d.name}: ${d.width}×${d.height}, ${bytes(d.size)}`] as [string, string])
    )
    quality.value = String(downloads.length - 1)
    quality.onchange = () => switchSource(downloads[Number(quality.value)]!.url)
    engine('mp4', 'Progressive MP4')
    video.src = downloads.at(-1)!.url
  }

  function switchSource(url: string) {
    const time = video.currentTime
    const playing = !video.paused
    video.src = url
    video.addEventListener(
      'loadedmetadata',
      () => {
        video.currentTime = time
        if (playing) void video.play()
      },
      { once: true }
    )
  }

  function options_(auto: [string, string] | null, rungs: [string, string][]) {
    fill(
      quality,
      [...(auto ? [auto] : []), ...rungs].map(([value, label]) => h('option', { value }, label))
    )
    quality.disabled = false
  }

  async function loadStoryboard(url: string) {
    try {
      const res = await fetch(url, { signal })
      if (res.ok) frames = parseStoryboard(await res.text(), url)
    } catch {
      // Without a storyboard the seek bar still seeks; it only shows no frames.
    }
  }

  start().catch((error: Problem) => {
    if (!signal.aborted) say(`The video could not be loaded: ${error.message}`)
  })
  return figure
}

/** The seek bar: follows the video, seeks it, and shows the storyboard frame under the pointer (or the thumb). */
function scrubbing(
  video: HTMLVideoElement,
  seek: HTMLInputElement,
  preview: HTMLElement,
  frame: HTMLElement,
  at: HTMLElement,
  frames: () => Frame[]
) {
  let dragging = false
  const duration = () => (Number.isFinite(video.duration) ? video.duration : 0)
  video.addEventListener('loadedmetadata', () => (seek.disabled = !duration()))
  video.addEventListener('timeupdate', () => {
    if (!dragging && duration()) seek.value = String(Math.round((video.currentTime / duration()) * SEEK_STEPS))
  })
  seek.addEventListener('input', () => {
    dragging = true
    show(Number(seek.value) / SEEK_STEPS)
  })
  seek.addEventListener('change', () => {
    dragging = false
    video.currentTime = (Number(seek.value) / SEEK_STEPS) * duration()
    preview.hidden = true
  })
  seek.addEventListener('pointermove', (event) => {
    const box = seek.getBoundingClientRect()
    show(Math.min(1, Math.max(0, (event.clientX - box.left) / box.width)))
  })
  seek.addEventListener('pointerleave', () => (preview.hidden = true))

  function show(fraction: number) {
    const time = fraction * duration()
    const found = frameAt(frames(), time)
    if (!found || !duration()) return
    frame.style.width = `${found.w}px`
    frame.style.height = `${found.h}px`
    frame.style.backgroundImage = `url("${found.url}")`
    frame.style.backgroundPosition = `-${found.x}px -${found.y}px`
    at.textContent = clock(time)
    preview.style.left = `${fraction * 100}%`
    preview.hidden = false
  }
}

const hasMediaSource = () => 'MediaSource' in window || 'ManagedMediaSource' in window
const kbps = (bits: number) => (bits >= 1e6 ? `${(bits / 1e6).toFixed(1)} Mb/s` : `${Math.round(bits / 1e3)} kb/s`)
const clock = (s: number) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`

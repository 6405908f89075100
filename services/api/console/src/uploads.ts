/**
 * The uploads of this tab, each from its file to its media's final state: uploading (two at a time), then its job
 * followed live, then done. They outlive the view that started them (open a media meanwhile, come back, and they are
 * still going); each has one list item, updated in place, which the media view shows.
 */
import { api, read, type Media, type Problem } from './api.ts'
import { announce, bytes, h } from './dom.ts'
import { follow, isFinal } from './events.ts'
import { progressLine } from './status.ts'
import { chosenPresets } from './presets.ts'
import { startUpload, type Upload } from './upload.ts'

const AT_ONCE = 2

interface Item {
  file: File
  phase: 'waiting' | 'uploading' | 'following' | 'done' | 'failed' | 'aborted'
  sent: number
  media: Media | null
  problem: Problem | null
  upload: Upload | null
  unfollow: () => void
  element: HTMLLIElement
}

const items: Item[] = []
let onAccepted: (media: Media) => void = () => {}
/** Told when an upload becomes a media, and again at its final state (the library shows it). */
export const whenMediaChanges = (handler: (media: Media) => void) => void (onAccepted = handler)

/** Adds files to upload; they start as slots free up. */
export function addFiles(files: Iterable<File>) {
  for (const file of files) {
    const item: Item = {
      file,
      phase: 'waiting',
      sent: 0,
      media: null,
      problem: null,
      upload: null,
      unfollow: () => {},
      element: h('li', { class: 'upload' }),
    }
    items.unshift(item)
    render(item)
  }
  next()
}

/** The list items of every upload of this tab, newest first. */
export const uploadElements = () => items.map((item) => item.element)

/** Forgets the uploads that are over (their media stay in the library). */
export function clearFinished(): void {
  const over = (item: Item) => item.phase === 'done' || item.phase === 'failed' || item.phase === 'aborted'
  for (let i = items.length - 1; i >= 0; i--) if (over(items[i]!)) items.splice(i, 1)
}

/** Stops every upload and stream (signing out). A finished upload is left alone: it is its media's original now. */
export function stopAll() {
  for (const item of items) {
    if (item.phase === 'waiting' || item.phase === 'uploading') item.upload?.abort()
    item.unfollow()
  }
  items.length = 0
}

function next() {
  while (items.filter((i) => i.phase === 'uploading').length < AT_ONCE) {
    const item = items.findLast((i) => i.phase === 'waiting')
    if (!item) return
    item.phase = 'uploading'
    render(item)
    void startUpload(
      item.file,
      {
        onProgress(sent) {
          item.sent = sent
          render(item)
        },
        onAccepted(id) {
          item.phase = 'following'
          render(item)
          next()
          announce(`${item.file.name} uploaded; processing`)
          item.unfollow = follow(id, {
            onState(media) {
              const first = item.media === null
              item.media = media
              if (isFinal(media)) {
                item.phase = 'done'
                announce(`${item.file.name}: ${media.status}`)
              }
              render(item)
              if (first || isFinal(media)) onAccepted(media)
            },
            onDeleted() {
              item.phase = 'aborted'
              render(item)
            },
          })
        },
        onFailed(problem) {
          if (item.phase === 'aborted') return
          item.phase = 'failed'
          item.problem = problem
          render(item)
          announce(`${item.file.name} could not be uploaded: ${problem.message}`)
          next()
        },
      },
      chosenPresets()
    ).then((upload) => {
      item.upload = upload
      // Cancelled while it was being started.
      if (item.phase === 'aborted') upload.abort()
      render(item)
    })
  }
}

async function cancel(item: Item) {
  if (item.phase === 'waiting' || item.phase === 'uploading') {
    item.upload?.abort()
    item.phase = 'aborted'
    render(item)
    next()
  } else if (item.media && !isFinal(item.media)) {
    try {
      item.media = await read<Media>(await api.v1.media[':id'].cancel.$post({ param: { id: item.media.id } }))
    } catch (error) {
      item.problem = error as Problem
    }
    render(item)
  }
}

/** An item's parts, made once and updated in place (a focused Cancel button keeps its focus as progress moves). */
function parts(item: Item) {
  const name = h('a', { class: 'name' }, item.file.name)
  const status = h('span', { class: 'badge', hidden: true })
  const bar = h('progress', { max: 100, value: 0, 'aria-label': `Progress of ${item.file.name}` })
  const line = h('p', { class: 'line' })
  const stop = h(
    'button',
    { type: 'button', class: 'secondary', onclick: () => void cancel(item), 'aria-label': `Cancel ${item.file.name}` },
    'Cancel'
  )
  item.element.append(h('div', { class: 'upload-head' }, name, status), bar, line, stop)
  return { name, status, bar, line, stop }
}
const drawn = new WeakMap<Item, ReturnType<typeof parts>>()

/** Draws an upload's item from its state. */
function render(item: Item) {
  let part = drawn.get(item)
  if (!part) drawn.set(item, (part = parts(item)))
  const { file, media } = item
  const percent = file.size ? Math.min(100, Math.round((item.sent / file.size) * 100)) : 100
  let line: string
  let progress: number | null = null
  switch (item.phase) {
    case 'waiting':
      line = 'Waiting to upload'
      break
    case 'uploading':
      line = `Uploading${item.upload?.resumable ? ' (resumable)' : ''} · ${percent} % of ${bytes(file.size)}`
      progress = percent
      break
    case 'aborted':
      line = media ? 'Deleted' : 'Upload stopped'
      break
    case 'failed':
      line = `Upload failed: ${item.problem?.message ?? 'unknown reason'}`
      break
    default:
      line = media ? progressLine(media) : 'Uploaded; waiting for its first state'
      if (item.problem) line += ` (${item.problem.message})`
      if (media && !isFinal(media)) progress = media.progress
  }
  if (media) {
    part.name.setAttribute('href', `#/media/${media.id}`)
    part.status.hidden = false
    part.status.className = `badge ${media.status}`
    part.status.textContent = media.status
  }
  part.bar.hidden = progress === null
  if (progress !== null) part.bar.value = progress
  part.line.textContent = line
  part.line.classList.toggle('bad', item.phase === 'failed' || media?.status === 'failed')
  part.stop.hidden = !(
    item.phase === 'waiting' ||
    item.phase === 'uploading' ||
    (item.phase === 'following' && !(media && isFinal(media)))
  )
  item.element.dataset.phase = item.phase
}

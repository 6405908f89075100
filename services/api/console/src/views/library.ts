/**
 * The media view: the upload area (drop files or pick them) with this tab's uploads, and the tenant's library,
 * newest first, a page at a time, filtered by status and kind. The page is read again when the tenant's media change
 * (the page's one event stream, events.ts), at most once a second.
 */
import { api, read, type Media, type Problem } from '../api.ts'
import { announce, bytes, fill, h, when } from '../dom.ts'
import { isFinal, onAnyChange } from '../events.ts'
import { outputUrl, thumbnailOf } from '../outputs.ts'
import { progressBar, progressLine, badge } from '../status.ts'
import { showPlaceholder } from '../placeholder.ts'
import { presetPicker } from '../presets.ts'
import { resumableHere } from '../upload.ts'
import { addFiles, clearFinished, uploadElements, whenMediaChanges } from '../uploads.ts'

const PAGE = 24
/** At most one read of the page per this long, however many changes come. */
const REFRESH_MS = 1_000
type List = { media: Media[]; next: string | null }

const STATUSES = [
  ['', 'Any status'],
  ['queued,processing', 'In progress'],
  ['completed', 'Completed'],
  ['failed', 'Failed'],
  ['cancelled', 'Cancelled'],
] as const
const KINDS = [
  ['', 'Images and videos'],
  ['image', 'Images'],
  ['video', 'Videos'],
] as const

/** Filters survive going to a media and back (this tab only). */
const filters = { status: '', kind: '' }

export function libraryView(main: HTMLElement): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined
  let stopped = false
  let pages = 1

  const input = h('input', {
    type: 'file',
    id: 'files',
    name: 'files',
    multiple: true,
    accept: 'image/*,video/*',
    class: 'file-input',
  })
  const drop = h(
    'label',
    { class: 'drop', for: 'files' },
    h('span', { class: 'drop-title' }, 'Drop photos and videos here'),
    h('span', null, 'or '),
    h('span', { class: 'button' }, 'choose files'),
    input
  )
  const hint = h('p', { class: 'hint' })
  const uploads = h('ul', { class: 'uploads', 'aria-label': 'Uploads' }, uploadElements())
  const clear = h(
    'button',
    { type: 'button', class: 'link', onclick: () => (clearFinished(), uploads.replaceChildren(...uploadElements())) },
    'Clear finished uploads'
  )
  const grid = h('ul', { class: 'grid', 'aria-label': 'Media', 'aria-busy': 'true' })
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Show more')
  const summary = h('p', { class: 'hint', role: 'status' })
  const select = (name: 'status' | 'kind', label: string, options: readonly (readonly [string, string])[]) => {
    const element = h(
      'select',
      { name, id: `filter-${name}` },
      options.map(([value, text]) => h('option', { value, selected: filters[name] === value }, text))
    )
    element.addEventListener('change', () => {
      filters[name] = element.value
      pages = 1
      void load()
    })
    return h('label', { for: `filter-${name}` }, label, element)
  }

  input.addEventListener('change', () => {
    if (input.files?.length) addFiles(Array.from(input.files))
    uploads.replaceChildren(...uploadElements())
    input.value = ''
  })
  drop.addEventListener('dragover', (event) => {
    event.preventDefault()
    drop.classList.add('over')
  })
  drop.addEventListener('dragleave', () => drop.classList.remove('over'))
  drop.addEventListener('drop', (event) => {
    event.preventDefault()
    drop.classList.remove('over')
    const files = Array.from(event.dataTransfer?.files ?? [])
    if (files.length) addFiles(files)
    uploads.replaceChildren(...uploadElements())
  })
  more.addEventListener('click', () => {
    pages++
    void load()
  })
  whenMediaChanges(() => void load())
  // A change of any of the tenant's media: the page is read again once the burst settles (at most once a second).
  let due = false
  const stopWatching = onAnyChange(() => {
    if (due) return
    due = true
    timer = setTimeout(() => {
      due = false
      void load()
    }, REFRESH_MS)
  })
  void resumableHere().then((resumable) => {
    hint.textContent = resumable
      ? 'Uploads are resumable: a dropped connection picks up where it stopped.'
      : 'This API does not offer resumable uploads: a dropped connection starts the file over.'
  })

  /** Cards by media id, with what they showed: a card that would show the same is kept (and any focus in it). */
  const cards = new Map<string, { seen: string; element: HTMLLIElement }>()
  function show(media: Media[]) {
    if (!media.length)
      return fill(grid, h('li', { class: 'empty' }, 'Nothing here yet: upload a photo or a video above.'))
    const sameOrder =
      media.length === grid.children.length &&
      media.every((m, i) => (grid.children[i] as HTMLElement).dataset.id === m.id)
    const elements = media.map((m) => {
      const seen = JSON.stringify([m.status, m.stage, m.progress, m.etaSeconds, m.outputs.length])
      const old = cards.get(m.id)
      if (old?.seen === seen) return old.element
      const element = card(m)
      if (sameOrder && old) old.element.replaceWith(element)
      cards.set(m.id, { seen, element })
      return element
    })
    if (!sameOrder) grid.replaceChildren(...elements)
  }

  /** Reads the first `pages` pages with the filters, and shows them. */
  let latest = 0
  async function load() {
    // Reads may overlap (a filter changed while the timer's read runs): only the latest is shown.
    const generation = ++latest
    grid.setAttribute('aria-busy', 'true')
    try {
      const media: Media[] = []
      let cursor: string | undefined
      for (let page = 0; page < pages; page++) {
        const query = {
          limit: String(PAGE),
          ...(filters.status ? { status: filters.status } : {}),
          ...(filters.kind ? { kind: filters.kind } : {}),
          ...(cursor ? { cursor } : {}),
        }
        const list = await read<List>(await api.v1.media.$get({ query }))
        media.push(...list.media)
        cursor = list.next ?? undefined
        if (!cursor) break
      }
      if (stopped || generation !== latest) return
      more.hidden = !cursor
      show(media)
      summary.textContent = `${media.length}${cursor ? '+' : ''} media shown`
    } catch (error) {
      if (stopped || generation !== latest) return
      fill(
        grid,
        h('li', { class: 'empty bad', role: 'alert' }, `The library could not be read: ${(error as Problem).message}`)
      )
    } finally {
      grid.setAttribute('aria-busy', 'false')
    }
  }

  fill(
    main,
    h('h1', { tabindex: -1 }, 'Media'),
    h(
      'section',
      { class: 'panel', 'aria-labelledby': 'upload-title' },
      h('h2', { id: 'upload-title' }, 'Upload'),
      drop,
      presetPicker(),
      hint,
      uploads,
      clear
    ),
    h(
      'section',
      { class: 'panel', 'aria-labelledby': 'library-title' },
      h(
        'div',
        { class: 'panel-head' },
        h('h2', { id: 'library-title' }, 'Library'),
        h(
          'form',
          { class: 'filters', onsubmit: (e: Event) => e.preventDefault() },
          select('status', 'Status', STATUSES),
          select('kind', 'Kind', KINDS)
        )
      ),
      grid,
      more,
      summary
    )
  )
  void load()
  announce('Media')
  return () => {
    stopped = true
    stopWatching()
    clearTimeout(timer)
    whenMediaChanges(() => {})
  }
}

/** One media in the library: its thumbnail (or a placeholder while it has none), name, kind, size and status. */
function card(media: Media): HTMLLIElement {
  const thumb = thumbnailOf(media)
  const name = media.filename ?? `${media.kind} ${media.id.slice(0, 8)}`
  const picture = h('div', { class: 'thumb' })
  if (thumb) {
    showPlaceholder(picture, media)
    const img = h('img', { alt: `Thumbnail of ${name}`, width: thumb.width, height: thumb.height, decoding: 'async' })
    void outputUrl(thumb).then(
      (url) => (img.src = url),
      () => picture.replaceChildren(h('span', { class: 'placeholder' }, 'No thumbnail'))
    )
    picture.append(img)
  } else if (media.kind === 'audio' && media.status === 'completed') {
    picture.append(h('span', { class: 'placeholder sound' }, '♪ Sound'))
  } else {
    picture.append(h('span', { class: 'placeholder' }, isFinal(media) ? media.status : progressLine(media)))
    if (!isFinal(media)) picture.append(progressBar(media, `Progress of ${name}`))
  }
  return h(
    'li',
    { 'data-id': media.id, 'data-status': media.status },
    h(
      'a',
      { href: `#/media/${media.id}`, class: 'card' },
      picture,
      h('span', { class: 'name' }, name),
      h('span', { class: 'meta' }, `${media.kind} · ${media.format} · ${bytes(media.size)}`),
      h('span', { class: 'meta' }, badge(media), ' ', h('time', { datetime: media.createdAt }, when(media.createdAt)))
    )
  )
}

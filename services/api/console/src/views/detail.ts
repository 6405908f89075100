/**
 * One media: the picture (an image's preview) or a player (a video: player.ts; a sound: audio.ts), its progress
 * live while it runs, why it failed and what to do, its outputs and metadata, and buttons to cancel and delete.
 */
import { OUTPUT_FORMATS } from '../../../../../shared/outputs.ts'
import { api, read, type Media, type Problem } from '../api.ts'
import { announce, bytes, fill, h, seconds, when } from '../dom.ts'
import { follow, isFinal } from '../events.ts'
import { outputUrl, previewOf, type Output } from '../outputs.ts'
import { showPlaceholder } from '../placeholder.ts'
import { audioPlayer } from '../audio.ts'
import { videoPlayer } from '../player.ts'
import { badge, failure, progressBar, progressLine } from '../status.ts'

export function detailView(main: HTMLElement, id: string): () => void {
  const stop = new AbortController()
  let unfollow = () => {}
  let shownStatus = ''
  const message = h('p', { class: 'message', role: 'status' })

  fill(main, h('p', null, h('a', { href: '#/media' }, '← All media')), h('h1', { tabindex: -1 }, 'Loading…'), message)

  function draw(media: Media) {
    const name = media.filename ?? `${media.kind} ${media.id.slice(0, 8)}`
    document.title = `${name} · Media console`
    const running = !isFinal(media)
    const focused = document.activeElement?.id
    fill(
      main,
      h('p', null, h('a', { href: '#/media' }, '← All media')),
      h('h1', { tabindex: -1 }, name),
      h(
        'p',
        { class: 'status-line' },
        badge(media),
        ' ',
        `${media.kind} · ${media.format} · ${bytes(media.size)} · uploaded ${when(media.createdAt)}`,
        // Bulk work waits behind uploads (docs/scheduling.md): said, so a slow start is not a surprise.
        media.priority === 'bulk' && running ? ' · queued as bulk work' : ''
      ),
      running
        ? h(
            'div',
            { class: 'live' },
            progressBar(media, `Progress of ${name}`),
            h('p', { class: 'line', id: 'progress-line' }, progressLine(media))
          )
        : null,
      media.error ? failure(media.error) : null,
      stage(media),
      h(
        'div',
        { class: 'actions' },
        running
          ? h(
              'button',
              { type: 'button', id: 'cancel', class: 'secondary', onclick: () => void cancel(media) },
              'Cancel processing'
            )
          : null,
        h(
          'button',
          { type: 'button', id: 'delete', class: 'danger', onclick: () => void remove(media, name) },
          'Delete'
        )
      ),
      message,
      outputsTable(media, message),
      metadataList(media),
      h(
        'section',
        { 'aria-labelledby': 'ids-title' },
        h('h2', { id: 'ids-title' }, 'Identifiers'),
        pairs([
          ['Media id', media.id],
          ['Job id', media.jobId],
          ['Trace id', media.traceId ?? 'none'],
          ['Created', when(media.createdAt)],
          ['Updated', when(media.updatedAt)],
        ])
      )
    )
    if (focused) document.getElementById(focused)?.focus()
  }

  /** Redraws on a change of status (the picture and player are made once it completes); otherwise only progress. */
  function onState(media: Media) {
    if (media.status === shownStatus && !isFinal(media)) {
      const bar = main.querySelector('.live progress') as HTMLProgressElement | null
      if (bar) bar.value = media.progress
      const line = document.getElementById('progress-line')
      if (line) line.textContent = progressLine(media)
      return
    }
    const first = shownStatus === ''
    shownStatus = media.status
    draw(media)
    if (first) (main.querySelector('h1') as HTMLElement).focus()
    else announce(`${media.filename ?? 'The media'} is ${media.status}`)
  }

  /** The picture or the player (a video plays once it has outputs: while a reprocess runs, the current ones). */
  function stage(media: Media) {
    const say = (text: string) => (message.textContent = text)
    if (media.kind === 'video') return media.outputs.length ? videoPlayer(media, { signal: stop.signal, say }) : null
    if (media.kind === 'audio') return media.outputs.length ? audioPlayer(media, { signal: stop.signal, say }) : null
    const preview = previewOf(media)
    if (!preview) return null
    const img = h('img', {
      class: 'preview',
      alt: `Preview of ${media.filename ?? 'the image'}`,
      width: preview.width,
      height: preview.height,
    })
    void outputUrl(preview).then(
      (url) => (img.src = url),
      (error: Problem) => (message.textContent = `The preview could not be loaded: ${error.message}`)
    )
    const figure = h(
      'figure',
      { class: 'stage' },
      img,
      h('figcaption', null, `${preview.name}: ${preview.width}×${preview.height}`)
    )
    showPlaceholder(img, media)
    return figure
  }

  async function cancel(media: Media) {
    message.textContent = 'Cancelling…'
    try {
      onState(await read<Media>(await api.v1.media[':id'].cancel.$post({ param: { id: media.id } })))
      message.textContent = 'Cancelled.'
    } catch (error) {
      message.textContent = `It could not be cancelled: ${(error as Problem).message}`
    }
  }

  async function remove(media: Media, name: string) {
    if (!confirm(`Delete ${name}, its original and everything made of it? This cannot be undone.`)) return
    message.textContent = 'Deleting…'
    try {
      const res = await api.v1.media[':id'].$delete({ param: { id: media.id } })
      if (!res.ok) await read(res)
      announce(`${name} deleted`)
      location.hash = '#/media'
    } catch (error) {
      message.textContent = `It could not be deleted: ${(error as Problem).message}`
    }
  }

  api.v1.media[':id']
    .$get({ param: { id } }, { init: { signal: stop.signal } })
    .then((res) => read<Media>(res))
    .then(
      (media) => {
        onState(media)
        if (!isFinal(media))
          unfollow = follow(id, { onState, onDeleted: () => (message.textContent = 'This media was deleted.') })
      },
      (error: Problem) => {
        if (stop.signal.aborted) return
        const missing = error.status === 404
        fill(
          main,
          h('p', null, h('a', { href: '#/media' }, '← All media')),
          h('h1', { tabindex: -1 }, missing ? 'Not found' : 'Could not load this media'),
          h('p', { role: 'alert' }, missing ? 'There is no media with this id for your API key.' : error.message)
        )
        ;(main.querySelector('h1') as HTMLElement).focus()
      }
    )
  return () => {
    stop.abort()
    unfollow()
  }
}

function outputsTable(media: Media, message: HTMLElement) {
  if (!media.outputs.length) return null
  return h(
    'section',
    { 'aria-labelledby': 'outputs-title' },
    h('h2', { id: 'outputs-title' }, 'Outputs'),
    h(
      'div',
      { class: 'scroll' },
      h(
        'table',
        null,
        h(
          'thead',
          null,
          h(
            'tr',
            null,
            ['Name', 'Type', 'Size', 'Dimensions', 'Duration', ''].map((t) => h('th', { scope: 'col' }, t))
          )
        ),
        h(
          'tbody',
          null,
          media.outputs.map((o) =>
            h(
              'tr',
              null,
              h('th', { scope: 'row' }, o.name),
              h('td', null, o.contentType),
              h('td', null, bytes(o.size)),
              h('td', null, o.width && o.height ? `${o.width}×${o.height}` : '—'),
              h('td', null, o.durationSeconds !== undefined ? seconds(o.durationSeconds) : '—'),
              h(
                'td',
                null,
                h(
                  'button',
                  {
                    type: 'button',
                    class: 'link',
                    onclick: () => void download(o, media, message),
                    'aria-label': `Download ${o.name}`,
                  },
                  'Download'
                )
              )
            )
          )
        )
      )
    )
  )
}

/** Saves an output as a file, through a short signed link (the browser downloads it; the page holds none of it). */
async function download(output: Output, media: Media, message: HTMLElement) {
  try {
    const { url } = await read<{ url: string }>(
      await api.v1.media[':id'].outputs[':name'].link.$get({ param: { id: media.id, name: output.name }, query: {} })
    )
    // The extension of the output's format (a segment file, video/mp4 like an MP4, is a fragmented MP4: it plays as one).
    const format = Object.values(OUTPUT_FORMATS).find((f) => f.contentType === output.contentType)
    const extension = format?.extension ?? 'bin'
    const base = (media.filename ?? media.id).replace(/\.[^.]+$/, '')
    h('a', { href: url, download: `${base}-${output.name}.${extension}` }).click()
  } catch (error) {
    message.textContent = `It could not be downloaded: ${(error as Problem).message}`
  }
}

/** What processing learned of the original, one line a field (nested values as compact JSON). */
function metadataList(media: Media) {
  if (!media.metadata) return null
  const rows = Object.entries(media.metadata).map(
    ([key, value]) =>
      [key, typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value)] as const
  )
  return h(
    'section',
    { 'aria-labelledby': 'metadata-title' },
    h('h2', { id: 'metadata-title' }, 'Metadata'),
    pairs(rows)
  )
}

const pairs = (rows: readonly (readonly [string, string])[]) =>
  h(
    'dl',
    { class: 'pairs' },
    rows.map(([key, value]) => [h('dt', null, key), h('dd', null, value)])
  )

/** How a media's state reads to people: a badge, a line of progress, and what to do about a failure. */
import { ERROR_CODES, type FailureClass } from '../../../../shared/messages.ts'
import type { Media } from './api.ts'
import { h, seconds } from './dom.ts'

/** The status as a badge (its colour is never the only sign: the word is there too). */
export const badge = (media: Pick<Media, 'status'>) => h('span', { class: `badge ${media.status}` }, media.status)

/** "Processing (uploading) · 95 % · about 2 s left" while it runs (the stage when not plain processing); the status once final. */
export function progressLine(media: Media): string {
  if (media.status === 'queued') return 'Queued: waiting for a processor'
  if (media.status !== 'processing')
    return media.status === 'failed' ? `Failed: ${media.error?.message ?? 'no reason given'}` : capitalise(media.status)
  const eta = media.etaSeconds !== null && media.etaSeconds > 0 ? ` · about ${seconds(media.etaSeconds)} left` : ''
  const stage = media.stage === 'processing' ? '' : ` (${media.stage})`
  return `Processing${stage} · ${Math.round(media.progress)} %${eta}`
}

/** A progress bar with its label; a final media shows none. */
export const progressBar = (media: Media, label: string) =>
  h('progress', { max: 100, value: media.progress, 'aria-label': label })

const ADVICE: Record<FailureClass, string> = {
  input:
    'The file itself is the problem: corrupt, of a kind that cannot be decoded, or over a limit. Trying again fails the same way; upload a different file.',
  transient:
    'Storage, the network or the broker failed on every attempt. Upload it again later; if it keeps happening, tell your operator.',
  crash:
    'The processor died or hung on this file every time. Your operator can re-drive it from the dead letters once the cause is fixed.',
  internal:
    'A bug or a misconfiguration, not your file. Tell your operator, with the trace id below: it finds every log line of this job.',
}

/** Why a job failed, and what to do about it. */
export function failure(error: NonNullable<Media['error']>) {
  const known = Object.hasOwn(ERROR_CODES, error.code) ? ERROR_CODES[error.code as keyof typeof ERROR_CODES] : null
  const kind: FailureClass = error.class ?? known?.class ?? 'internal'
  return h(
    'section',
    { class: 'failure', role: 'alert', 'aria-labelledby': 'failure-title' },
    h('h2', { id: 'failure-title' }, 'Why it failed'),
    h('p', { class: 'reason' }, error.message),
    h(
      'dl',
      { class: 'pairs' },
      h('dt', null, 'Class'),
      h('dd', null, kind),
      h('dt', null, 'Code'),
      h('dd', null, h('code', null, error.code), known ? ` (${known.meaning})` : '')
    ),
    h('p', null, h('strong', null, 'What to do: '), ADVICE[kind])
  )
}

const capitalise = (text: string) => text.charAt(0).toUpperCase() + text.slice(1)

/**
 * For operators: the health of each dependency and the job counts (`/health`, open), and with the admin token
 * (ADMIN_TOKEN, kept in this tab only) the depth of every queue and the dead letters, each to re-drive or discard.
 * Read again every few seconds while shown.
 */
import { admin, send, type Problem } from '../api.ts'
import { announce, fill, h, when } from '../dom.ts'
import { session } from '../session.ts'
import type { DeadLetterListSchema, HealthSchema, QueueListSchema } from '../../../http/bodies.ts'
import type * as v from 'valibot'

const REFRESH_MS = 5_000
type Health = v.InferOutput<typeof HealthSchema>
type Queues = v.InferOutput<typeof QueueListSchema>
type Letters = v.InferOutput<typeof DeadLetterListSchema>

export function operationsView(main: HTMLElement): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined
  let stopped = false
  const health = h('section', { class: 'panel', 'aria-labelledby': 'health-title', 'aria-busy': 'true' })
  const queues = h('section', { class: 'panel', 'aria-labelledby': 'queues-title' })
  const letters = h('section', { class: 'panel', 'aria-labelledby': 'letters-title' })
  const message = h('p', { class: 'message', role: 'status' })

  async function refresh() {
    clearTimeout(timer)
    await Promise.all([showHealth(), session.adminToken() ? showAdmin() : showTokenForm()])
    if (!stopped) timer = setTimeout(() => void refresh(), REFRESH_MS)
  }

  async function showHealth() {
    try {
      const body = (await (await send('/health')).json()) as Health
      fill(
        health,
        h(
          'h2',
          { id: 'health-title' },
          'Health ',
          h('span', { class: `badge ${body.status === 'ok' ? 'completed' : 'failed'}` }, body.status)
        ),
        h(
          'ul',
          { class: 'checks' },
          (['database', 'rabbitmq', 's3'] as const).map((name) => {
            const check = body.checks[name]
            return h(
              'li',
              { class: check.ok ? 'ok' : 'bad' },
              h('strong', null, name),
              check.ok ? ': up' : `: down (${check.error})`
            )
          })
        ),
        h(
          'dl',
          { class: 'pairs' },
          body.jobs
            ? Object.entries(body.jobs).map(([status, count]) => [
                h('dt', null, `Jobs ${status}`),
                h('dd', null, String(count)),
              ])
            : null,
          h('dt', null, 'Stalled'),
          h('dd', null, String(body.stalled ?? 'unknown')),
          h('dt', null, 'Dead letters'),
          h('dd', null, String(body.deadLetters ?? 'unknown')),
          h('dt', null, 'API keys'),
          h('dd', null, body.auth === 'keys' ? 'required' : 'not required (AUTH=none)')
        )
      )
    } catch (error) {
      fill(
        health,
        h('h2', { id: 'health-title' }, 'Health'),
        h('p', { class: 'bad', role: 'alert' }, `The API did not answer: ${(error as Problem).message}`)
      )
    } finally {
      health.setAttribute('aria-busy', 'false')
    }
  }

  async function showAdmin() {
    try {
      const [q, l] = await Promise.all([admin<Queues>('/queues'), admin<Letters>('/dead-letters?limit=100')])
      if (stopped) return
      fill(queues, h('h2', { id: 'queues-title' }, 'Queues'), queueTable(q))
      fill(letters, h('h2', { id: 'letters-title' }, 'Dead letters'), letterTable(l))
    } catch (error) {
      const problem = error as Problem
      if (problem.status === 401 || problem.status === 404) {
        session.setAdminToken(null)
        return showTokenForm(problem.status === 401 ? 'That admin token was not accepted.' : problem.message)
      }
      fill(queues, h('h2', { id: 'queues-title' }, 'Queues'), h('p', { class: 'bad', role: 'alert' }, problem.message))
    }
  }

  function showTokenForm(reason = '') {
    if (queues.querySelector('form')) return
    const input = h('input', { type: 'password', id: 'admin-token', autocomplete: 'off', required: true })
    const form = h(
      'form',
      { class: 'narrow' },
      h('h2', { id: 'queues-title' }, 'Queues and dead letters'),
      h('p', null, "These need the operator's token: the ADMIN_TOKEN the API was started with."),
      h('label', { for: 'admin-token' }, 'Admin token'),
      input,
      h('button', { type: 'submit' }, 'Open'),
      h('p', { class: 'bad', role: 'alert' }, reason)
    )
    form.addEventListener('submit', (event) => {
      event.preventDefault()
      session.setAdminToken(input.value.trim())
      fill(queues)
      void refresh()
    })
    fill(queues, form)
    fill(letters)
  }

  function queueTable(body: Queues) {
    return h(
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
            ['Type', 'Queue', 'Ready messages', 'Consumers'].map((t) => h('th', { scope: 'col' }, t))
          )
        ),
        h(
          'tbody',
          null,
          body.queues.map((q) =>
            h(
              'tr',
              { class: q.queue === 'dead' && q.messages ? 'bad' : '' },
              h('th', { scope: 'row' }, q.type),
              h('td', null, q.queue),
              h('td', null, String(q.messages)),
              h('td', null, String(q.consumers))
            )
          )
        )
      )
    )
  }

  function letterTable(body: Letters) {
    if (!body.deadLetters.length) return h('p', null, 'None: every message was handled.')
    return h(
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
            ['Died', 'Queue', 'Reason', 'Deliveries', 'Tenant', 'Job', 'Problem', 'Actions'].map((t) =>
              h('th', { scope: 'col' }, t)
            )
          )
        ),
        h(
          'tbody',
          null,
          body.deadLetters.map((letter) =>
            h(
              'tr',
              null,
              h('th', { scope: 'row' }, h('time', { datetime: letter.deadAt }, when(letter.deadAt))),
              h('td', null, letter.queue),
              h('td', null, letter.reason),
              h('td', null, letter.deliveries === null ? '—' : String(letter.deliveries)),
              h('td', null, letter.tenant ?? '—'),
              h('td', null, h('code', null, letter.jobId ?? '—')),
              h('td', null, letter.problem ?? 'none'),
              h(
                'td',
                { class: 'row-actions' },
                h(
                  'button',
                  {
                    type: 'button',
                    class: 'secondary',
                    disabled: letter.problem !== null,
                    onclick: () => void act(letter.id, 'redrive'),
                    'aria-label': `Re-drive the dead letter of job ${letter.jobId ?? letter.id}`,
                  },
                  'Re-drive'
                ),
                h(
                  'button',
                  {
                    type: 'button',
                    class: 'danger',
                    onclick: () => void act(letter.id, 'discard'),
                    'aria-label': `Discard the dead letter of job ${letter.jobId ?? letter.id}`,
                  },
                  'Discard'
                )
              )
            )
          )
        )
      )
    )
  }

  async function act(id: string, action: 'redrive' | 'discard') {
    if (action === 'discard' && !confirm('Discard this dead letter? Its job stays failed.')) return
    try {
      await admin(action === 'redrive' ? `/dead-letters/${id}/redrive` : `/dead-letters/${id}`, {
        method: action === 'redrive' ? 'POST' : 'DELETE',
      })
      message.textContent = action === 'redrive' ? 'Re-driven: the job is queued again.' : 'Discarded.'
    } catch (error) {
      message.textContent = `That did not work: ${(error as Problem).message}`
    }
    announce(message.textContent ?? '')
    void refresh()
  }

  const forget = h(
    'button',
    { type: 'button', class: 'secondary', onclick: () => (session.setAdminToken(null), void refresh()) },
    'Forget the admin token'
  )
  fill(
    main,
    h('div', { class: 'panel-head' }, h('h1', { tabindex: -1 }, 'Operations'), forget),
    message,
    health,
    queues,
    letters
  )
  void refresh()
  return () => {
    stopped = true
    clearTimeout(timer)
  }
}

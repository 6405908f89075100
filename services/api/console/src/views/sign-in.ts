/**
 * Signing in: an API key, tried on the API before it is kept (in this tab's sessionStorage). An API that takes
 * requests without a key (AUTH=none, as /health says) can be entered without one.
 */
import { problemOf, send, type Problem } from '../api.ts'
import { announce, fill, h } from '../dom.ts'
import { NO_KEY, session } from '../session.ts'

export function signInView(main: HTMLElement, done: () => void, reason?: string): () => void {
  const input = h('input', {
    type: 'password',
    id: 'api-key',
    name: 'api-key',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
    'aria-describedby': 'key-help',
  })
  const error = h('p', { class: 'bad', id: 'sign-in-error', role: 'alert' }, reason ?? '')
  const open = h('p', { hidden: true })
  const form = h(
    'form',
    { class: 'panel narrow' },
    h('label', { for: 'api-key' }, 'API key'),
    input,
    h(
      'p',
      { class: 'hint', id: 'key-help' },
      'Issued keys start with mk_. On a development machine, `bun run start` prints one (it is kept in .data/dev-api-key). The key stays in this tab only.'
    ),
    h('button', { type: 'submit' }, 'Sign in'),
    error,
    open
  )
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const key = input.value.trim()
    error.textContent = ''
    try {
      // Tried before it is kept: a refused key is this form's error, not a sign-out.
      const res = await send('/v1/media?limit=1', { headers: { authorization: `Bearer ${key}` } })
      if (!res.ok) throw await problemOf(res, false)
      session.setKey(key)
      announce('Signed in')
      done()
    } catch (problem) {
      const { status, message } = problem as Problem
      error.textContent =
        status === 401 ? 'That key was not accepted: it is unknown or revoked.' : `Could not sign in: ${message}`
      input.focus()
    }
  })
  // An API run with AUTH=none needs no key; say so, and let people in.
  void send('/health')
    .then((res) => res.json() as Promise<{ auth?: string }>)
    .then(
      (health) => {
        if (health.auth !== 'none') return
        fill(
          open,
          'This API takes requests without a key (AUTH=none). ',
          h(
            'button',
            { type: 'button', class: 'secondary', onclick: () => (session.setKey(NO_KEY), done()) },
            'Continue without a key'
          )
        )
        open.hidden = false
      },
      () => {}
    )
  fill(main, h('h1', { tabindex: -1 }, 'Sign in'), form)
  input.focus()
  return () => {}
}

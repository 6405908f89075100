/**
 * The console's entry: a router over the URL's hash (#/media, #/media/<id>, #/operations, #/sign-in), each view a
 * function that draws into <main> and returns how to stop it (its streams, timers and blob URLs). Without a key,
 * every view but sign-in and operations asks for one first.
 */
import { whenUnauthorized } from './api.ts'
import { announce } from './dom.ts'
import { session } from './session.ts'
import { stopAll } from './uploads.ts'
import { detailView } from './views/detail.ts'
import { libraryView } from './views/library.ts'
import { operationsView } from './views/operations.ts'
import { signInView } from './views/sign-in.ts'

let stopView = () => {}

function route(reason?: string) {
  stopView()
  const main = document.getElementById('main')!
  const nav = document.getElementById('nav')!
  const path = location.hash.replace(/^#/, '') || '/media'
  const signedIn = session.key() !== null
  nav.hidden = !signedIn
  for (const link of Array.from(nav.querySelectorAll('a'))) {
    const here = path.startsWith(link.getAttribute('href')!.slice(1))
    if (here) link.setAttribute('aria-current', 'page')
    else link.removeAttribute('aria-current')
  }
  const media = /^\/media\/([0-9a-f-]{36})$/.exec(path)
  if (path === '/operations') {
    nav.hidden = false
    document.title = 'Operations · Media console'
    stopView = operationsView(main)
  } else if (!signedIn || path === '/sign-in') {
    document.title = 'Sign in · Media console'
    stopView = signInView(main, () => go('#/media'), reason)
  } else if (media) {
    document.title = 'Media · Media console'
    stopView = detailView(main, media[1]!)
  } else {
    document.title = 'Media · Media console'
    stopView = libraryView(main)
  }
  // Moving to a view moves the focus to its heading, as a page load would put a reader at the top.
  if (path !== '/sign-in' && signedIn) (main.querySelector('h1') as HTMLElement | null)?.focus()
}

/** Shows `hash`'s view (setting the hash routes by itself, unless it is already there). */
function go(hash: string) {
  if (location.hash === hash) route()
  else location.hash = hash
}

function signOut(reason?: string) {
  stopAll()
  session.clear()
  announce('Signed out')
  history.replaceState(null, '', '#/sign-in')
  route(reason)
}

addEventListener('hashchange', () => route())
document.getElementById('sign-out')!.addEventListener('click', () => signOut())
whenUnauthorized((problem) => signOut(`Signed out: ${problem.message}`))
route()

/** Building the page from TypeScript: `h()` makes an element, and the formatters turn numbers into words. */

type Child = Node | string | number | null | undefined | false | readonly Child[]
/** Attributes (`true` sets an empty one, `false`/null/undefined none) and `on<event>` listeners. */
type Props = Record<string, unknown>

/** An element with its attributes, listeners and children. Text is always text: nothing here parses HTML. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props?: Props | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag)
  for (const [name, value] of Object.entries(props ?? {})) {
    if (name.startsWith('on') && typeof value === 'function')
      element.addEventListener(name.slice(2).toLowerCase(), value as EventListener)
    else if (value === true) element.setAttribute(name, '')
    else if (value !== false && value !== null && value !== undefined) element.setAttribute(name, String(value))
  }
  append(element, children)
  return element
}

function append(parent: Node, children: readonly Child[]) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue
    if (Array.isArray(child)) append(parent, child)
    else parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)))
  }
}

/** Replaces an element's children. */
export function fill(parent: Element, ...children: Child[]) {
  parent.replaceChildren()
  append(parent, children)
}

/** Says something to screen readers (the page's polite live region). */
export function announce(text: string) {
  const region = document.getElementById('announcer')
  if (region) region.textContent = text
}

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB']
/** 1536 → "1.5 KB" (decimal units, as file managers show sizes). */
export function bytes(size: number): string {
  let value = size
  let unit = 0
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000
    unit++
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${UNITS[unit]}`
}

/** 75 → "1 min 15 s". */
export function seconds(total: number): string {
  const s = Math.max(0, Math.round(total))
  if (s < 60) return `${s} s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m} min${s % 60 ? ` ${s % 60} s` : ''}`
  return `${Math.floor(m / 60)} h ${m % 60} min`
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' })
/** An ISO timestamp as the reader's local date and time. */
export const when = (iso: string) => dateTime.format(new Date(iso))

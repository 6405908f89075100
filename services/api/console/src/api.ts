/**
 * The API as the console calls it: the typed client (client.ts, so every path and answer is checked against the
 * routes), the API key on every request, and error answers turned into a `Problem` that says what went wrong.
 */
import { createClient, type ErrorBody } from '../../client.ts'
import { keyHeaders, session } from './session.ts'

export type { Media, Playback } from '../../client.ts'

/** What an error answer (or no answer) said: its status (0: no answer), code and message. */
export class Problem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string
  ) {
    super(message)
    this.name = 'Problem'
  }
}

/** Called when the API refuses the key (401): the key was revoked, or is wrong. */
let onUnauthorized: (problem: Problem) => void = () => {}
export const whenUnauthorized = (handler: (problem: Problem) => void) => void (onUnauthorized = handler)

/** fetch, with "no answer at all" as a Problem too. */
export const send = (input: RequestInfo | URL, init?: RequestInit) =>
  fetch(input, init).catch((error: Error) => {
    throw new Problem(0, 'network', `the API could not be reached (${error.message})`)
  })

export const api = createClient(location.origin, { headers: () => keyHeaders(), fetch: send })

/** The body of a successful answer, or the answer's error thrown as a Problem. */
export async function read<T>(res: { ok: boolean; status: number; json(): Promise<unknown> }): Promise<T> {
  if (res.ok) return (await res.json()) as T
  throw await problemOf(res)
}

/** An error answer as a Problem: our error body when it has one, else its status. `keyed`: a 401 means the key. */
export async function problemOf(res: { status: number; json(): Promise<unknown> }, keyed = true): Promise<Problem> {
  const body = (await res.json().catch(() => null)) as ErrorBody | null
  const problem = body?.error
    ? new Problem(res.status, body.error.code, body.error.message)
    : new Problem(res.status, 'http_error', `the API answered ${res.status}`)
  if (keyed && res.status === 401 && session.key() !== null) onUnauthorized(problem)
  return problem
}

/** A request to the admin API with the operator's token (not the typed client: its header is not the key's). */
export async function admin<T>(path: string, init: RequestInit = {}): Promise<T> {
  const res = await send(`/v1/admin${path}`, {
    ...init,
    headers: { authorization: `Bearer ${session.adminToken() ?? ''}` },
  })
  if (res.status === 204) return undefined as T
  if (res.ok) return (await res.json()) as T
  throw await problemOf(res, false)
}

/**
 * HTTP input through valibot, as Hono validator middleware: hono-openapi's `validator` (`@hono/standard-validator`
 * underneath), so the schema a route validates with is the very one its OpenAPI document shows, with a hook that
 * answers our error body instead of the validator's own (which echoes the input). Handlers then read typed values
 * with `c.req.valid('param' | 'query' | 'json')`, and `hc` clients get the same types.
 *
 * @example
 * app.get('/:id', param(v.object({ id: MediaIdSchema }), 404), (c) => c.req.valid('param').id)
 */
import { validator } from 'hono-openapi'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import type * as v from 'valibot'
import { ApiError } from './errors.ts'

type Target = 'param' | 'query' | 'json'
/** An issue as Standard Schema reports it (valibot's path items are objects with a `key`). */
interface Issue {
  readonly message: string
  readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined
}

const WHERE: Record<Target, string> = { param: 'path parameter', query: 'query parameter', json: 'body field' }
/** Input is quoted back only this far: a message names what is wrong; it does not echo a huge value. */
const SHOWN_CHARACTERS = 40

/**
 * Validates the path's parameters. `status` is 404 for an id in the path: an id that cannot exist is as unknown as
 * one that does not, and both answer `not_found`.
 */
export function param<S extends v.GenericSchema>(schema: S, status: 400 | 404 = 400) {
  return validator('param', schema, (result) => {
    if (!result.success) throw invalid('param', result.error, result.data, status)
  })
}

/** Validates the query string; a value given twice arrives as an array, which a string schema refuses. */
export function query<S extends v.GenericSchema>(schema: S) {
  return validator('query', schema, (result) => {
    if (!result.success) throw invalid('query', result.error, result.data, 400)
  })
}

/** Validates a JSON body (a body that is not JSON fails as a 400 in hono's validator, before the schema). */
export function json<S extends v.GenericSchema>(schema: S) {
  return validator('json', schema, (result) => {
    if (!result.success) throw invalid('json', result.error, result.data, 400)
  })
}

/** The first issue as our error: which field, what is wrong with it, and (briefly) what was sent. */
function invalid(target: Target, issues: readonly Issue[], data: unknown, status: ContentfulStatusCode): ApiError {
  const code = status === 404 ? 'not_found' : 'bad_request'
  const issue = issues[0]
  if (!issue) return new ApiError(status, code, `the ${WHERE[target]}s are invalid`)
  const keys = (issue.path ?? []).map((item) =>
    typeof item === 'object' && item !== null && 'key' in item ? item.key : item
  )
  const field = keys.map(String).join('.')
  const sent = keys.reduce<unknown>(
    (value, key) =>
      typeof value === 'object' && value !== null ? (value as Record<PropertyKey, unknown>)[key] : undefined,
    data
  )
  const what = field ? `${WHERE[target]} ${field}` : `the ${WHERE[target]}s`
  // A schema's own message may quote the input (valibot's defaults do), so it is cut short too.
  const got = field && typeof sent === 'string' ? ` (got ${JSON.stringify(cut(sent, SHOWN_CHARACTERS))})` : ''
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more problem${issues.length > 2 ? 's' : ''})` : ''
  const wrong = field && sent === undefined ? 'is missing' : cut(issue.message, 3 * SHOWN_CHARACTERS)
  return new ApiError(status, code, `${what} ${wrong}${got}${more}`)
}

const cut = (text: string, max: number) => (text.length > max ? `${text.slice(0, max)}…` : text)

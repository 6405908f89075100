/**
 * A typed client of the API for TypeScript backends: hono's `hc` over `AppType`, so every path, parameter and
 * answer is checked by tsc against the routes themselves. It imports only the API's types, never its code; at run
 * time it is `hc` and fetch.
 *
 * @example
 * const api = createClient('http://localhost:3000', { headers: { authorization: `Bearer ${key}` } })
 * const res = await api.v1.media[':id'].$get({ param: { id } })
 * if (res.ok) console.log((await res.json()).status)
 * else console.error((await res.json()).error.message)
 */
import { hc, type ClientRequestOptions, type InferResponseType } from 'hono/client'
import type { AppType } from './app.ts'

export type { AppType }

// The client type is computed once here, so tsc does not infer the whole app again at every use (hono's advice).
const typedClient = (baseUrl: string, options?: ClientRequestOptions) => hc<AppType>(baseUrl, options)
export type Client = ReturnType<typeof typedClient>
export const createClient = (baseUrl: string, options?: ClientRequestOptions): Client => typedClient(baseUrl, options)

/** A media as `GET /v1/media/{id}` answers it (and as each SSE `state` event carries it). */
export type Media = InferResponseType<Client['v1']['media'][':id']['$get'], 200>
/** The answer to an accepted upload. */
export type Accepted = InferResponseType<Client['v1']['media']['$post'], 202>
/** A video's playback links (GET /v1/media/:id/playback). */
export type Playback = InferResponseType<Client['v1']['media'][':id']['playback']['$get'], 200>
/** The error body every error answer carries. */
export type ErrorBody = InferResponseType<Client['v1']['media'][':id']['$get'], 404>

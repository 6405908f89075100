/**
 * One POST to a webhook endpoint, connected only to an address that was checked. `fetch` resolves the name itself,
 * after any check made beforehand, so a name could answer a public address to the check and a private one to the
 * connection (DNS rebinding). node:http's `lookup` hook (honoured by Bun and Deno alike) is where the connection
 * asks for its address: it resolves once, checks every address (destination.ts) and hands over only those, so
 * what is checked is what is connected to. TLS still verifies the certificate against the URL's name. Redirects
 * are not followed; the answer's body is read up to a small cap (it is only quoted in the delivery's record).
 */
import http from 'node:http'
import https from 'node:https'
import type { LookupFunction } from 'node:net'
import ipaddr from 'ipaddr.js'
import { checkedAddresses, type DestinationRules, type Resolver } from './destination.ts'

/** How much of an answer's body is kept. */
const BODY_CAP = 16 * 1024

export interface Answer {
  status: number
  retryAfter: string | null
  /** The start of the body (up to 16 KiB), as text. */
  text: string
}

export interface PostOptions {
  headers: Record<string, string>
  timeoutMs: number
  rules: DestinationRules
  resolve: Resolver
}

/** POSTs `body` to `url`; rejects when the destination is refused, cannot be reached, or does not answer in time. */
export async function postPinned(url: string, body: string, options: PostOptions): Promise<Answer> {
  const target = new URL(url)
  // An address written in the URL is connected to without a lookup: checked here instead.
  const literal = target.hostname.replace(/^\[|\]$/g, '')
  if (ipaddr.isValid(literal)) await checkedAddresses(literal, options.rules, options.resolve)
  const lookup: LookupFunction = (hostname, lookupOptions, callback) => {
    checkedAddresses(hostname, options.rules, options.resolve).then(
      (addresses) => {
        if (lookupOptions.all) return callback(null, addresses)
        const first = addresses[0]!
        callback(null, first.address, first.family)
      },
      (error: Error) => callback(Object.assign(error, { code: 'EREFUSED' }), '', 0)
    )
  }
  const client = target.protocol === 'https:' ? https : http
  return new Promise<Answer>((resolve, reject) => {
    const timer = setTimeout(
      () => request.destroy(new Error(`no answer within ${options.timeoutMs / 1000} s`)),
      options.timeoutMs
    )
    const request = client.request(
      target,
      {
        method: 'POST',
        headers: { ...options.headers, 'content-length': String(Buffer.byteLength(body)) },
        lookup,
        agent: false,
      },
      (response) => {
        const chunks: Buffer[] = []
        let kept = 0
        response.on('data', (chunk: Buffer) => {
          if (kept >= BODY_CAP) return void response.destroy()
          chunks.push(chunk)
          kept += chunk.length
        })
        const done = () => {
          clearTimeout(timer)
          const retryAfter = response.headers['retry-after']
          resolve({
            status: response.statusCode ?? 0,
            retryAfter: typeof retryAfter === 'string' ? retryAfter : null,
            text: Buffer.concat(chunks).subarray(0, BODY_CAP).toString('utf8'),
          })
        }
        response.on('end', done)
        // Cut off after the cap (or by the endpoint): what arrived is the answer.
        response.on('close', done)
        response.on('error', done)
      }
    )
    request.on('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    request.end(body)
  })
}

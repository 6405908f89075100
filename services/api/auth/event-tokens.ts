/**
 * Short-lived tokens that open an event socket (`GET /v1/ws?token=…`, or a first `auth` message): a browser cannot
 * set the Authorization header on a WebSocket, and its API key does not belong in a URL that proxies log. A token
 * names the key's tenant and key, lasts a minute, and is signed with a key every API instance shares (kept in the
 * database, like the links' key but a key of its own), so one instance's token opens a socket on any other.
 */
import { Buffer } from 'node:buffer'
import * as v from 'valibot'
import type { CoordinationRepo } from '../store/coordination.ts'
import { sharedHmacKey } from './shared-key.ts'

const SECRET_NAME = 'event-tokens'
/** How long a token opens sockets. */
export const TOKEN_SECONDS = 60
const encoder = new TextEncoder()

/** What a token says: whose it is, and until when it opens sockets (epoch seconds). */
const ClaimsSchema = v.object({ tenant: v.string(), keyId: v.string(), exp: v.number() })
export type TokenClaims = v.InferOutput<typeof ClaimsSchema>

export interface EventTokens {
  issue(claims: Omit<TokenClaims, 'exp'>): Promise<{ token: string; expiresAt: string }>
  /** The claims of a valid, unexpired token; null otherwise (forged, changed, expired or malformed). */
  verify(token: string): Promise<TokenClaims | null>
}

export function createEventTokens(coordination: Pick<CoordinationRepo, 'sharedSecret'>): EventTokens {
  const hmacKey = sharedHmacKey(coordination, SECRET_NAME)
  return {
    async issue(claims) {
      const exp = Math.floor(Date.now() / 1000) + TOKEN_SECONDS
      const body = Buffer.from(JSON.stringify({ ...claims, exp })).toString('base64url')
      const signature = await crypto.subtle.sign('HMAC', await hmacKey(), encoder.encode(body))
      return {
        token: `${body}.${Buffer.from(signature).toString('base64url')}`,
        expiresAt: new Date(exp * 1000).toISOString(),
      }
    },
    async verify(token) {
      const [body, signature, extra] = token.split('.')
      if (!body || !signature || extra !== undefined || token.length > 1024) return null
      const bytes = Buffer.from(signature, 'base64url')
      if (bytes.length !== 32) return null
      if (!(await crypto.subtle.verify('HMAC', await hmacKey(), bytes, encoder.encode(body)))) return null
      let claims: unknown
      try {
        claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'))
      } catch {
        return null
      }
      const parsed = v.safeParse(ClaimsSchema, claims)
      if (!parsed.success || parsed.output.exp < Date.now() / 1000) return null
      return parsed.output
    },
  }
}

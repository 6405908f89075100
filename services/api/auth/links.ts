/**
 * Signed links to outputs: a URL a browser can load without the API key (an <img> or a <video> cannot send one),
 * good for one output until it expires: `/v1/links/<media id>/<name>?expires=<unix seconds>&signature=<HMAC-SHA256>`, signed with
 * a key every API instance shares (kept in the database, made by the first instance that signs), so a link made by
 * one instance opens on any other. The signature covers the media, the output and the expiry, so none can be changed.
 */
import { Buffer } from 'node:buffer'
import type { CoordinationRepo } from '../store/coordination.ts'
import { sharedHmacKey } from './shared-key.ts'

const SECRET_NAME = 'output-links'
/** How long a link may be asked to last: a minute to a week. */
export const LINK_SECONDS = { min: 60, max: 7 * 86_400, default: 3_600 }

/** Where links point: `<LINKS_PATH>/<media id>/<output name>?expires=…&signature=…` (routes/links.ts). */
export const LINKS_PATH = '/v1/links'
const encoder = new TextEncoder()

export interface Links {
  /** The query string (`expires=…&signature=…`) of a link to `name` of media `id`, valid until `expiresAt` (epoch s). */
  sign(id: string, name: string, expiresAt: number): Promise<string>
  /** Whether `signature` is the one for this output and expiry (compared in constant time by WebCrypto). */
  verify(id: string, name: string, expiresAt: number, signature: string): Promise<boolean>
}

/**
 * The whole link to output `name` of media `id` on `origin`, valid until `expiresAt` (epoch seconds); its path ends
 * in `file` (the output's file name, for players that judge a URL by its extension) or the name.
 */
export const signedUrl = async (
  links: Pick<Links, 'sign'>,
  origin: string,
  target: { id: string; name: string; file?: string },
  expiresAt: number
) =>
  `${origin}${LINKS_PATH}/${target.id}/${target.file ?? target.name}?${await links.sign(target.id, target.name, expiresAt)}`

export function createLinks(coordination: Pick<CoordinationRepo, 'sharedSecret'>): Links {
  const hmacKey = sharedHmacKey(coordination, SECRET_NAME)
  const message = (id: string, name: string, expiresAt: number) => encoder.encode(`${id}/${name}/${expiresAt}`)
  return {
    async sign(id, name, expiresAt) {
      const signature = await crypto.subtle.sign('HMAC', await hmacKey(), message(id, name, expiresAt))
      return `expires=${expiresAt}&signature=${Buffer.from(signature).toString('base64url')}`
    },
    async verify(id, name, expiresAt, signature) {
      const bytes = Buffer.from(signature, 'base64url')
      if (bytes.length !== 32) return false
      return crypto.subtle.verify('HMAC', await hmacKey(), bytes, message(id, name, expiresAt))
    },
  }
}

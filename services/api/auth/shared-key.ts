/**
 * An HMAC-SHA256 key every API instance shares: its secret is kept in the database under `name` (made by the first
 * instance that asks), so what one instance signs, any other verifies. Signed links and event tokens each have
 * their own.
 */
import { Buffer } from 'node:buffer'
import type { CoordinationRepo } from '../store/coordination.ts'

/** The key, imported once and then reused; asked of the database again after a failure (it was down). */
export function sharedHmacKey(coordination: Pick<CoordinationRepo, 'sharedSecret'>, name: string) {
  let key: Promise<CryptoKey> | undefined
  return () =>
    (key ??= coordination
      .sharedSecret(name, Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64'))
      .then((secret) =>
        crypto.subtle.importKey('raw', Buffer.from(secret, 'base64'), { name: 'HMAC', hash: 'SHA-256' }, false, [
          'sign',
          'verify',
        ])
      )
      .catch((error) => {
        key = undefined
        throw error
      }))
}

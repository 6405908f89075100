/**
 * Standard Webhooks signatures (https://www.standardwebhooks.com, v1): `webhook-signature` is `v1,` + the base64
 * HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<body>` under the secret's bytes (`whsec_` + base64), one per
 * secret in use, space-separated, so a receiver may rotate without missing a delivery. Web Crypto only: it runs on
 * Bun and Deno. The tests check it against the `standardwebhooks` library.
 */

const SECRET_PREFIX = 'whsec_'
/** 24 random bytes: the spec asks for 24 to 64. */
const SECRET_BYTES = 24

const toBase64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes))
const fromBase64 = (text: string) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0))

/** A new endpoint secret, `whsec_…`. */
export function newSecret(): string {
  return SECRET_PREFIX + toBase64(crypto.getRandomValues(new Uint8Array(SECRET_BYTES)))
}

/** One `v1,…` signature of a delivery under `secret`. */
export async function sign(secret: string, id: string, timestamp: number, body: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    'raw',
    fromBase64(secret.slice(SECRET_PREFIX.length)),
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['sign']
  )
  const mac = await crypto.subtle.sign('HMAC', key, new TextEncoder().encode(`${id}.${timestamp}.${body}`))
  return `v1,${toBase64(new Uint8Array(mac))}`
}

/** The three headers of a delivery, signed with every secret given (newest first). */
export async function signedHeaders(
  secrets: readonly string[],
  id: string,
  timestamp: number,
  body: string
): Promise<Record<string, string>> {
  const signatures = await Promise.all(secrets.map((secret) => sign(secret, id, timestamp, body)))
  return { 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signatures.join(' ') }
}

/**
 * API keys. A key is `mk_` and 43 characters of base64url (32 random bytes); the store keeps only its SHA-256 hash
 * (a key has the entropy of a random secret, so a slow password hash would add nothing) and the first characters
 * (`prefix`) so that operators can tell keys apart. A presented key is hashed and looked up by its hash; the
 * stored hash is then compared in constant time, so neither step's timing depends on how much of a guess is right.
 * Nothing is cached: a revoked key stops working on the next request, on every API instance.
 */
import { Buffer } from 'node:buffer'
import { timingSafeEqual } from 'node:crypto'
import * as v from 'valibot'
import type { JobClass } from '@app/shared'
import type { ApiKey } from '../store/keys.ts'
import type { Store } from '../store/open.ts'
/** What the key functions use of the store. */
type Keys = Pick<Store, 'keys'>

const TENANT_RULE = 'must be 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit'
export const TenantSchema = v.pipe(v.string(TENANT_RULE), v.regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, TENANT_RULE))
/** Keys an operator brings (API_KEYS) must be at least this long; generated ones are 46 characters. */
export const MIN_KEY_LENGTH = 16
const KEY_RULE = `must be ${MIN_KEY_LENGTH} to 256 printable characters without spaces or commas`
export const KeySchema = v.pipe(
  v.string(KEY_RULE),
  v.regex(new RegExp(`^[\\x21-\\x2b\\x2d-\\x7e]{${MIN_KEY_LENGTH},256}$`), KEY_RULE)
)
/** How many characters of a key are kept in the clear to recognise it by. */
const PREFIX_LENGTH = 8

/** A new random key. */
export function generateKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32))
  return `mk_${btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '')}`
}

export async function hashKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(key))
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('')
}

/** Stores a key for `tenant`: a new random one, or `key` when given (API_KEYS). Returns the key once, with its record. */
export async function issueKey(
  store: Keys,
  tenant: string,
  options: { name?: string | null; key?: string; priority?: JobClass } = {}
) {
  const key = options.key ?? generateKey()
  const record: ApiKey = {
    id: crypto.randomUUID(),
    tenant,
    name: options.name ?? null,
    prefix: key.slice(0, PREFIX_LENGTH),
    priority: options.priority ?? 'interactive',
    createdAt: new Date().toISOString(),
    revokedAt: null,
  }
  const created = await store.keys.create(record, await hashKey(key))
  return { key, record, created }
}

/**
 * Seeds the keys of API_KEYS. A key already stored is left as it is, so one an operator revoked stays revoked
 * across restarts (remove it from API_KEYS too).
 */
export async function seedKeys(store: Keys, keys: readonly { tenant: string; key: string }[]): Promise<number> {
  let created = 0
  for (const { tenant, key } of keys) if ((await issueKey(store, tenant, { key, name: 'API_KEYS' })).created) created++
  return created
}

/** The active key record that `presented` is, or null (unknown or revoked). */
export async function authenticate(store: Keys, presented: string): Promise<ApiKey | null> {
  const hash = await hashKey(presented)
  const found = await store.keys.find(hash)
  if (!found || !timingSafeEqual(Buffer.from(found.hash, 'hex'), Buffer.from(hash, 'hex'))) return null
  return found.record.revokedAt ? null : found.record
}

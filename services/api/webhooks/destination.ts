/**
 * Where a webhook may point. A tenant's URL must not reach into the network the API runs in (SSRF): it must be
 * https (unless an operator allows http), and every address its host resolves to must be public, checked at send
 * time on the resolved addresses (so a name that later resolves inward is caught). An operator may allow private
 * destinations (WEBHOOK_ALLOW_PRIVATE, as the tests do). A name can still change between this check and the
 * connection (DNS rebinding within the TTL); an egress proxy that filters addresses closes that gap.
 */
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'

export interface DestinationRules {
  allowHttp: boolean
  allowPrivate: boolean
}

/** Why `url` may not be a webhook's, or null: the checks that need no DNS (at registration and at send). */
export function urlProblem(url: string, rules: DestinationRules): string | null {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return 'url must be an absolute URL'
  }
  if (parsed.protocol !== 'https:' && !(rules.allowHttp && parsed.protocol === 'http:')) return 'url must use https'
  if (parsed.username || parsed.password) return 'url must not carry credentials'
  const host = parsed.hostname.replace(/^\[|\]$/g, '')
  if (!rules.allowPrivate && (host === 'localhost' || host.endsWith('.localhost') || (isIP(host) && isPrivateAddress(host)))) {
    return `url points at a private, loopback or link-local address (${host})`
  }
  return null
}

/** Resolves the URL's host and refuses it when any address it has is private (unless allowed). */
export async function checkDestination(url: string, rules: DestinationRules): Promise<void> {
  const problem = urlProblem(url, rules)
  if (problem) throw new Error(problem)
  if (rules.allowPrivate) return
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '')
  const addresses = isIP(host) ? [{ address: host }] : await lookup(host, { all: true })
  const inward = addresses.find((a) => isPrivateAddress(a.address))
  if (inward) throw new Error(`${host} resolves to ${inward.address}, a private, loopback or link-local address`)
}

/** Loopback, private, link-local, shared, multicast, reserved and unspecified addresses, IPv4 and IPv6. */
export function isPrivateAddress(address: string): boolean {
  if (isIP(address) === 4) return privateV4(address.split('.').map(Number) as [number, number, number, number])
  const a = address.toLowerCase()
  if (a === '::' || a === '::1') return true
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a)
  if (mapped) return isPrivateAddress(mapped[1]!)
  const first = Number.parseInt(a.split(':')[0] || '0', 16)
  return (
    (first & 0xfe00) === 0xfc00 || // fc00::/7 unique local
    (first & 0xffc0) === 0xfe80 || // fe80::/10 link-local
    (first & 0xff00) === 0xff00 || // ff00::/8 multicast
    a.startsWith('64:ff9b:') || // NAT64, which can reach IPv4 inside
    a.startsWith('2001:db8:') // documentation
  )
}

function privateV4([a, b, c]: [number, number, number, number]): boolean {
  return (
    a === 0 ||
    a === 10 ||
    a === 127 ||
    (a === 100 && b >= 64 && b <= 127) || // shared (carrier NAT)
    (a === 169 && b === 254) || // link-local, cloud metadata
    (a === 172 && b >= 16 && b <= 31) ||
    (a === 192 && b === 168) ||
    (a === 192 && b === 0 && (c === 0 || c === 2)) || // IETF protocol assignments, documentation
    (a === 198 && (b === 18 || b === 19)) || // benchmarking
    a >= 224 // multicast, reserved, broadcast
  )
}

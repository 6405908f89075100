/**
 * Where a webhook may point. A tenant's URL must not reach into the network the API runs in (SSRF): it must be
 * https (unless an operator allows http), carry no credentials, and name a public host. Addresses are judged by
 * parsing them (ipaddr.js), never by matching their text: every way of writing an address (hex, octal or integer
 * IPv4; IPv4-mapped, IPv4-compatible, NAT64, 6to4 and Teredo IPv6) is reduced to the IPv4 or IPv6 address it
 * reaches, and only a global unicast address is public. Names are checked twice: at registration by their form
 * (`localhost`, `*.internal`, a single label a resolver would complete with its search domains), and before each
 * attempt on every address they resolve to; the attempt then connects to an address so checked, with no second
 * resolution in between (post.ts), so a name that changes its answer (DNS rebinding) cannot slip inward.
 * An operator may allow private destinations (WEBHOOK_ALLOW_PRIVATE, as the tests do).
 */
import ipaddr from 'ipaddr.js'

export interface DestinationRules {
  allowHttp: boolean
  allowPrivate: boolean
}

/** A name's addresses, as `dns.lookup(name, { all: true })` gives them. */
export type Resolver = (hostname: string) => Promise<{ address: string; family: number }[]>

/**
 * Names that only mean something inside a network: loopback names, mDNS, and the suffixes RFC 6762 (appendix G)
 * and RFC 8375 set aside for private use. A name without a dot is refused as well: a resolver completes it with
 * its search domains, which name the API's own network.
 */
const INWARD_SUFFIXES = [
  'localhost',
  'localdomain',
  'local',
  'internal',
  'intranet',
  'private',
  'corp',
  'home',
  'lan',
  'home.arpa',
  'arpa',
]

/**
 * Why `address` may not be connected to, or null when it is a public (global unicast) address. An address that
 * carries an IPv4 address inside it is judged by that one, and named with it: `::ffff:7f00:1 (127.0.0.1)`.
 */
export function addressProblem(address: string): string | null {
  let parsed: ipaddr.IPv4 | ipaddr.IPv6
  try {
    parsed = ipaddr.parse(address.replace(/^\[|\]$/g, ''))
  } catch {
    return `${address} is not an IP address`
  }
  const reached = reachedAddress(parsed)
  // For IPv6, "unicast" to ipaddr.js is whatever no special range claims; only 2000::/3 is assigned as global.
  const range =
    reached.kind() === 'ipv6' && reached.range() === 'unicast' && !(reached as ipaddr.IPv6).match(GLOBAL_UNICAST)
      ? 'unassigned'
      : reached.range()
  if (range === 'unicast') return null
  const shown = reached === parsed ? parsed.toString() : `${parsed.toString()}, which reaches ${reached.toString()},`
  return `${shown} is ${RANGE_NAMES[range] ?? `a special-purpose address (${range})`}, not a public one`
}

/** What the address reaches: the IPv4 address an IPv6 form carries (mapped, compatible, NAT64, 6to4, Teredo), else itself. */
function reachedAddress(address: ipaddr.IPv4 | ipaddr.IPv6): ipaddr.IPv4 | ipaddr.IPv6 {
  if (address.kind() === 'ipv4') return address
  const v6 = address as ipaddr.IPv6
  const p = v6.parts
  const v4 = (high: number, low: number) => new ipaddr.IPv4([high >> 8, high & 0xff, low >> 8, low & 0xff])
  switch (v6.range()) {
    case 'ipv4Mapped': // ::ffff:a.b.c.d
    case 'rfc6145': // ::ffff:0:a.b.c.d, IPv4-translated
      return v4(p[6]!, p[7]!)
    case 'rfc6052': // NAT64: 64:ff9b::a.b.c.d (the local-use 64:ff9b:1::/48 carries it in the same place)
      return v4(p[6]!, p[7]!)
    case '6to4': // 2002:aabb:ccdd::/48
      return v4(p[1]!, p[2]!)
    case 'teredo': // 2001:0:<server>:<flags>:<port ^ ffff>:<client ^ ffffffff>
      return v4(p[6]! ^ 0xffff, p[7]! ^ 0xffff)
    case 'unicast':
      // IPv4-compatible (deprecated, ::a.b.c.d): the first 96 bits zero. `::` and `::1` are ranges of their own.
      return p.slice(0, 6).every((part) => part === 0) ? v4(p[6]!, p[7]!) : v6
    default:
      return v6
  }
}

const GLOBAL_UNICAST = ipaddr.IPv6.parseCIDR('2000::/3')

/** How each of ipaddr.js's ranges reads in a refusal. */
const RANGE_NAMES: Record<string, string> = {
  unspecified: 'the unspecified address',
  broadcast: 'the broadcast address',
  multicast: 'a multicast address',
  linkLocal: 'a link-local address (the cloud metadata service lives there)',
  loopback: 'a loopback address',
  carrierGradeNat: 'a shared (carrier-grade NAT) address',
  private: 'a private address',
  reserved: 'a reserved, documentation or benchmarking address',
  uniqueLocal: 'a unique local (private) address',
  deprecatedSiteLocal: 'a site-local (private) address',
  benchmarking: 'a benchmarking address',
  discard: 'a discard-only address',
  as112: 'an AS112 address',
  as112v6: 'an AS112 address',
  amt: 'an AMT relay address',
  teredo: 'a Teredo address',
  orchid2: 'an ORCHID address',
  deprecatedOrchid: 'an ORCHID address',
  droneRemoteIdProtocolEntityTags: 'a reserved address',
  segmentRouting: 'a segment-routing address',
  unassigned: 'outside the global unicast range (2000::/3)',
}

/** Why `url` may not be a webhook's, or null: the checks that need no DNS (at registration, and before each attempt). */
export function urlProblem(url: string, rules: DestinationRules): string | null {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return 'url must be an absolute URL'
  }
  if (parsed.protocol !== 'https:' && !(rules.allowHttp && parsed.protocol === 'http:')) return 'url must use https'
  if (parsed.username || parsed.password) return 'url must not carry credentials'
  if (rules.allowPrivate) return null
  // The URL parser has already written every IPv4 form as a dotted quad and every IPv6 one in brackets.
  const host = parsed.hostname
  if (host.startsWith('[') || ipaddr.IPv4.isValidFourPartDecimal(host)) {
    const problem = addressProblem(host)
    return problem && `url points inward: ${problem}`
  }
  const name = host.replace(/\.+$/, '').toLowerCase()
  if (!name.includes('.'))
    return `url points inward: ${host} is a name without a domain, which a resolver completes with the API's own`
  const suffix = INWARD_SUFFIXES.find((s) => name === s || name.endsWith(`.${s}`))
  if (suffix)
    return `url points inward: ${host} is a name under .${suffix}, which only means something inside a network`
  return null
}

/**
 * The addresses to connect to for `hostname`, every one of them checked: resolved once, refused (with the reason)
 * when any is not public, unless private destinations are allowed. The caller connects to one of these and to
 * nothing else.
 */
export async function checkedAddresses(
  hostname: string,
  rules: DestinationRules,
  resolve: Resolver
): Promise<{ address: string; family: number }[]> {
  const host = hostname.replace(/^\[|\]$/g, '')
  const addresses = ipaddr.isValid(host) ? [{ address: host, family: host.includes(':') ? 6 : 4 }] : await resolve(host)
  if (!addresses.length) throw new Error(`${hostname} has no address`)
  if (rules.allowPrivate) return addresses
  for (const { address } of addresses) {
    const problem = addressProblem(address)
    if (problem) throw new Error(`${hostname} resolves inward: ${problem}`)
  }
  return addresses
}

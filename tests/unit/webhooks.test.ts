/** Webhook signing (checked against the `standardwebhooks` library) and the address rules, with no network. */
import { describe, expect, test } from 'bun:test'
import { Webhook } from 'standardwebhooks'
import { addressProblem, checkedAddresses, urlProblem } from '../../services/api/webhooks/destination.ts'
import { newSecret, sign, signedHeaders } from '../../services/api/webhooks/sign.ts'

describe('signatures', () => {
  test("ours are the library's, byte for byte, and it verifies them", async () => {
    const secret = newSecret()
    const id = 'msg_0123456789abcdef0123456789abcdef'
    const timestamp = Math.floor(Date.now() / 1000)
    const body = JSON.stringify({
      type: 'media.completed',
      timestamp: new Date().toISOString(),
      data: { id: 'x', ü: 'ünïcødé' },
    })
    const library = new Webhook(secret)
    expect(await sign(secret, id, timestamp, body)).toBe(library.sign(id, new Date(timestamp * 1000), body))
    expect(library.verify(body, await signedHeaders([secret], id, timestamp, body))).toEqual(JSON.parse(body))
  })

  test('several secrets sign side by side; any one of them verifies; a stale timestamp does not', async () => {
    const [newer, older] = [newSecret(), newSecret()]
    const body = '{"type":"media.deleted"}'
    const now = Math.floor(Date.now() / 1000)
    const headers = await signedHeaders([newer, older], 'msg_1', now, body)
    expect(headers['webhook-signature']!.split(' ')).toHaveLength(2)
    for (const secret of [newer, older]) expect(() => new Webhook(secret).verify(body, headers)).not.toThrow()
    expect(() => new Webhook(newSecret()).verify(body, headers)).toThrow()
    const stale = await signedHeaders([newer], 'msg_1', now - 600, body)
    expect(() => new Webhook(newer).verify(body, stale)).toThrow()
  })
})

describe('destinations', () => {
  const strict = { allowHttp: false, allowPrivate: false }
  /**
   * Every way of writing an address the URL parser and the resolver accept, each with its verdict at registration:
   * `ok`, or the words its refusal must contain. The address each inward form reaches is named in the refusal.
   */
  const TABLE: [url: string, verdict: string][] = [
    ['https://hooks.example.com/media', 'ok'],
    ['https://hooks.example.com./media', 'ok'],
    ['https://8.8.8.8/x', 'ok'],
    ['https://1.1.1.1:8443/x', 'ok'],
    ['https://[2606:4700:4700::1111]/x', 'ok'],
    ['https://[::ffff:8.8.8.8]/x', 'ok'],
    ['https://[64:ff9b::808:808]/x', 'ok'], // NAT64 of 8.8.8.8
    ['https://[2002:808:808::1]/x', 'ok'], // 6to4 of 8.8.8.8
    ['https://172.32.0.1/x', 'ok'],
    ['https://100.128.0.1/x', 'ok'],
    ['https://127.0.0.1/x', 'loopback'],
    ['https://127.1/x', 'loopback'], // short form
    ['https://0x7f.0.0.1/x', 'loopback'], // hex
    ['https://0177.0.0.1/x', 'loopback'], // octal
    ['https://2130706433/x', 'loopback'], // one integer
    ['https://0x7f000001/x', 'loopback'], // one hex integer
    ['https://%31%32%37.0.0.1/x', 'loopback'], // percent-encoded
    ['https://[::1]/x', 'loopback'],
    ['https://[::ffff:127.0.0.1]/x', 'reaches 127.0.0.1'], // IPv4-mapped, dotted
    ['https://[::ffff:7f00:1]/x', 'reaches 127.0.0.1'], // IPv4-mapped, hex
    ['https://[0:0:0:0:0:ffff:7f00:1]/x', 'reaches 127.0.0.1'], // IPv4-mapped, long
    ['https://[::127.0.0.1]/x', 'reaches 127.0.0.1'], // IPv4-compatible
    ['https://[::ffff:0:7f00:1]/x', 'reaches 127.0.0.1'], // IPv4-translated
    ['https://[64:ff9b::7f00:1]/x', 'reaches 127.0.0.1'], // NAT64
    ['https://[64:ff9b:1::a00:1]/x', 'reaches 10.0.0.1'], // local-use NAT64
    ['https://[2002:7f00:1::]/x', 'reaches 127.0.0.1'], // 6to4
    ['https://[2002:a9fe:a9fe::1]/x', 'reaches 169.254.169.254'], // 6to4 to the metadata service
    ['https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x', 'reaches 127.0.0.1'], // Teredo, client 127.0.0.1
    ['https://[::ffff:a9fe:a9fe]/latest/meta-data', 'reaches 169.254.169.254'],
    ['https://[::ffff:10.0.0.1]/x', 'reaches 10.0.0.1'],
    ['https://169.254.169.254/latest/meta-data', 'link-local'],
    ['https://10.0.0.1/x', 'private'],
    ['https://172.16.5.4/x', 'private'],
    ['https://172.31.255.255/x', 'private'],
    ['https://192.168.1.1/x', 'private'],
    ['https://100.64.0.1/x', 'carrier-grade NAT'],
    ['https://0.0.0.0/x', 'unspecified'],
    ['https://[::]/x', 'unspecified'],
    ['https://224.0.0.1/x', 'multicast'],
    ['https://[ff02::1]/x', 'multicast'],
    ['https://255.255.255.255/x', 'broadcast'],
    ['https://[fe80::1]/x', 'link-local'],
    ['https://[fd00::1]/x', 'unique local'],
    ['https://[fec0::1]/x', 'site-local'],
    ['https://192.0.2.10/x', 'documentation'], // TEST-NET-1
    ['https://198.51.100.7/x', 'documentation'], // TEST-NET-2
    ['https://198.18.0.1/x', 'benchmarking'],
    ['https://[2001:db8::1]/x', 'documentation'],
    ['https://[2001:2::1]/x', 'benchmarking'],
    ['https://[100::1]/x', 'discard'],
    ['https://[4000::1]/x', 'global unicast'], // unassigned
    ['https://localhost/x', 'inward'],
    ['https://localhost./x', 'inward'],
    ['https://LOCALHOST:8443/x', 'inward'],
    ['https://api.localhost/x', 'inward'],
    ['https://metadata.google.internal/computeMetadata/v1/', 'inward'],
    ['https://printer.local/x', 'inward'],
    ['https://router.home.arpa/x', 'inward'],
    ['https://1.0.0.127.in-addr.arpa/x', 'inward'],
    ['https://intranet/x', 'without a domain'],
    ['http://hooks.example.com/x', 'https'],
    ['ftp://hooks.example.com/x', 'https'],
    ['https://user:pass@hooks.example.com/x', 'credentials'],
    ['not a url', 'absolute URL'],
  ]

  test(`${TABLE.length} ways of writing a destination, each refused or allowed by what it reaches`, () => {
    expect(TABLE.length).toBeGreaterThanOrEqual(40)
    const verdicts = TABLE.map(([url]) => [url, urlProblem(url, strict) ?? 'ok'])
    for (const [i, [url, expected]] of TABLE.entries()) {
      const [, verdict] = verdicts[i]!
      if (expected === 'ok') expect({ url, verdict }).toEqual({ url, verdict: 'ok' })
      else expect({ url, verdict }).toEqual({ url, verdict: expect.stringContaining(expected) })
    }
  })

  test('an operator may allow http and private destinations; never credentials or other schemes', () => {
    expect(urlProblem('http://hooks.example.com/media', { ...strict, allowHttp: true })).toBeNull()
    expect(urlProblem('https://10.0.0.5/x', { ...strict, allowPrivate: true })).toBeNull()
    expect(urlProblem('https://localhost/x', { ...strict, allowPrivate: true })).toBeNull()
    expect(urlProblem('https://a:b@hooks.example.com/', { allowHttp: true, allowPrivate: true })).toContain(
      'credentials'
    )
    expect(urlProblem('ftp://hooks.example.com/', { allowHttp: true, allowPrivate: true })).toContain('https')
  })

  test('addresses are judged by what they reach, however they are written', () => {
    expect(addressProblem('8.8.8.8')).toBeNull()
    expect(addressProblem('2606:4700:4700::1111')).toBeNull()
    expect(addressProblem('::ffff:8.8.8.8')).toBeNull()
    expect(addressProblem('::ffff:7f00:1')).toBe(
      '::ffff:7f00:1, which reaches 127.0.0.1, is a loopback address, not a public one'
    )
    expect(addressProblem('0x7f.1')).toContain('loopback')
    expect(addressProblem('not-an-address')).toContain('not an IP address')
  })

  test('a name is refused when any address it resolves to is inward; the addresses checked are the ones returned', async () => {
    const resolver = (answers: Record<string, string[]>) => async (host: string) =>
      (answers[host] ?? []).map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))
    const resolve = resolver({
      'public.example.com': ['93.184.216.34', '2606:2800:220:1::1'],
      'mixed.example.com': ['93.184.216.34', '127.0.0.1'],
      'mapped.example.com': ['::ffff:a9fe:a9fe'],
      'none.example.com': [],
    })
    expect(await checkedAddresses('public.example.com', strict, resolve)).toEqual([
      { address: '93.184.216.34', family: 4 },
      { address: '2606:2800:220:1::1', family: 6 },
    ])
    await expect(checkedAddresses('mixed.example.com', strict, resolve)).rejects.toThrow(
      'mixed.example.com resolves inward: 127.0.0.1 is a loopback address'
    )
    await expect(checkedAddresses('mapped.example.com', strict, resolve)).rejects.toThrow(
      'which reaches 169.254.169.254'
    )
    await expect(checkedAddresses('none.example.com', strict, resolve)).rejects.toThrow('has no address')
    await expect(checkedAddresses('[::1]', strict, resolve)).rejects.toThrow('loopback')
    expect(await checkedAddresses('mixed.example.com', { ...strict, allowPrivate: true }, resolve)).toHaveLength(2)
  })
})

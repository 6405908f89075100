/** Webhook signing (checked against the `standardwebhooks` library) and the address rules, with no network. */
import { describe, expect, test } from 'bun:test'
import { Webhook } from 'standardwebhooks'
import { isPrivateAddress, urlProblem } from '../../services/api/webhooks/destination.ts'
import { newSecret, sign, signedHeaders } from '../../services/api/webhooks/sign.ts'

describe('signatures', () => {
  test("ours are the library's, byte for byte, and it verifies them", async () => {
    const secret = newSecret()
    const id = 'msg_0123456789abcdef0123456789abcdef'
    const timestamp = Math.floor(Date.now() / 1000)
    const body = JSON.stringify({ type: 'media.completed', timestamp: new Date().toISOString(), data: { id: 'x', ü: 'ünïcødé' } })
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
  test('private, loopback, link-local and reserved addresses are told from public ones', () => {
    const inward = ['10.0.0.1', '127.0.0.1', '169.254.169.254', '172.16.5.4', '172.31.255.255', '192.168.1.1', '100.64.0.1', '0.0.0.0', '224.0.0.1', '::1', '::', 'fe80::1', 'fd00::1', '::ffff:10.0.0.1', '64:ff9b::a00:1']
    const outward = ['8.8.8.8', '1.1.1.1', '172.32.0.1', '192.0.78.9', '100.128.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8']
    for (const address of inward) expect({ address, private: isPrivateAddress(address) }).toEqual({ address, private: true })
    for (const address of outward) expect({ address, private: isPrivateAddress(address) }).toEqual({ address, private: false })
  })

  test('URLs: https unless allowed, no credentials, no private literal hosts unless allowed', () => {
    const strict = { allowHttp: false, allowPrivate: false }
    expect(urlProblem('https://hooks.example.com/media', strict)).toBeNull()
    expect(urlProblem('http://hooks.example.com/media', strict)).toContain('https')
    expect(urlProblem('http://hooks.example.com/media', { ...strict, allowHttp: true })).toBeNull()
    expect(urlProblem('https://10.0.0.5/x', strict)).toContain('private')
    expect(urlProblem('https://10.0.0.5/x', { ...strict, allowPrivate: true })).toBeNull()
    expect(urlProblem('https://a:b@hooks.example.com/', strict)).toContain('credentials')
    expect(urlProblem('ftp://hooks.example.com/', { allowHttp: true, allowPrivate: true })).toContain('https')
  })
})

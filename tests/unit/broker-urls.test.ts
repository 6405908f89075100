/**
 * RABBITMQ_URL as a list of broker URLs, without a broker: the parsing and its errors (which never show a URL), the
 * address amqplib is given, and the rotation, both against amqplib's real recovery (loopback listeners that hang up
 * on every attempt) and on a lost connection.
 */
import { describe, expect, test } from 'bun:test'
import amqp from 'amqplib'
import type { Socket, TCPSocketListener } from 'bun'
import { EventEmitter } from 'node:events'
import * as v from 'valibot'
import {
  BrokerEnv,
  brokerAddress,
  connectInTurn,
  describeBrokerUrls,
  parseBrokerUrls,
  readEnv,
  type BrokerAddress,
} from '@app/shared'
import { readConfig as readImagesConfig } from '../../services/images/main.ts'

const readBrokerEnv = (env: Record<string, string | undefined>) => readEnv(v.object(BrokerEnv), env)
const envError = (value: string) => {
  try {
    readBrokerEnv({ RABBITMQ_URL: value })
  } catch (error) {
    return (error as Error).message
  }
  throw new Error('RABBITMQ_URL was accepted')
}

describe('parsing RABBITMQ_URL', () => {
  test('one URL is a list of one, and the default is the local broker', () => {
    expect(readBrokerEnv({ RABBITMQ_URL: 'amqp://u:p@rabbit:5672' }).RABBITMQ_URL).toEqual(['amqp://u:p@rabbit:5672'])
    expect(readBrokerEnv({}).RABBITMQ_URL).toEqual(['amqp://guest:guest@127.0.0.1:5672'])
  })

  test('several URLs are split at commas, with the spaces around them dropped, in their order', () => {
    const value = 'amqp://u:p@a:5672, amqps://u:p@b:5671/prod ,amqp://c'
    expect(readBrokerEnv({ RABBITMQ_URL: value }).RABBITMQ_URL).toEqual([
      'amqp://u:p@a:5672',
      'amqps://u:p@b:5671/prod',
      'amqp://c',
    ])
  })

  test('a bad entry is named by its position, with the variable, and no URL is shown', () => {
    const secret = 'hunter2'
    const cases: [string, string][] = [
      [
        `amqp://u:${secret}@a:5672,http://u:${secret}@b:80`,
        'RABBITMQ_URL: entry 2 of 2 must be an amqp:// or amqps:// URL',
      ],
      [`amqp://u:${secret}@a:5672,,amqp://c`, 'RABBITMQ_URL: entry 2 of 3 is empty'],
      [`amqp://u:${secret}@a:5672,`, 'RABBITMQ_URL: entry 2 of 2 is empty'],
      [
        `not a url ${secret},amqp://a`,
        'RABBITMQ_URL: entry 1 of 2 must be a URL such as amqp://user:password@host:5672',
      ],
      [
        `amqp://u:${secret}@a:5672,amqp://v:${secret}@a:5672`,
        'RABBITMQ_URL: entry 2 of 2 names the same broker as entry 1',
      ],
      [`ftp://u:${secret}@a`, 'RABBITMQ_URL: must be an amqp:// or amqps:// URL'],
      ['', 'RABBITMQ_URL: must be a URL such as amqp://user:password@host:5672'],
    ]
    for (const [value, line] of cases) {
      const message = envError(value)
      expect(message).toContain(line)
      expect(message).not.toContain(secret)
    }
  })

  test('the same host on another port or virtual host is another broker', () => {
    expect(parseBrokerUrls('amqp://a:5672,amqp://a:5673,amqp://a:5672/other')).toMatchObject({ ok: true })
  })

  test('a processor reads the list into its settings', () => {
    const config = readImagesConfig({
      S3_ACCESS_KEY_ID: 'id',
      S3_SECRET_ACCESS_KEY: 'secret',
      RABBITMQ_URL: 'amqp://a:5681,amqp://a:5682',
    })
    expect(config.runtime.rabbitmqUrl).toEqual(['amqp://a:5681', 'amqp://a:5682'])
  })

  test('logs see every URL without its credentials', () => {
    expect(describeBrokerUrls(['amqp://u:p%40ss@a:5681/%2F?heartbeat=5', 'amqps://b'])).toBe(
      'amqp://a:5681/%2F?heartbeat=5, amqps://b'
    )
  })
})

describe('the address amqplib is given', () => {
  test('carries host, port, decoded credentials, the still-encoded vhost and the query settings', () => {
    expect(
      brokerAddress(
        'amqps://us%20er:p%40ss%2Cword@rabbit.internal:5671/my%2Fvhost?heartbeat=10&frameMax=8192&locale=en_GB'
      )
    ).toEqual({
      protocol: 'amqps',
      hostname: 'rabbit.internal',
      port: 5671,
      username: 'us er',
      password: 'p@ss,word',
      vhost: 'my%2Fvhost',
      heartbeat: 10,
      frameMax: 8192,
      channelMax: undefined,
      maxFrameSize: undefined,
      locale: 'en_GB',
    })
  })

  test('leaves out what the URL leaves out, so amqplib picks its defaults (port 5672, guest/guest, vhost /)', () => {
    expect(brokerAddress('amqp://[::1]')).toMatchObject({
      protocol: 'amqp',
      hostname: '::1',
      port: undefined,
      username: undefined,
      password: undefined,
      vhost: undefined,
      heartbeat: undefined,
    })
  })
})

/** Loopback listeners that each record an attempt and hang up at once, as a dead node's address would refuse. */
function refusingBrokers(count: number) {
  const attempts: number[] = []
  const listeners: TCPSocketListener[] = Array.from({ length: count }, () =>
    Bun.listen({
      hostname: '127.0.0.1',
      port: 0,
      socket: {
        open(socket: Socket) {
          attempts.push(socket.localPort)
          socket.end()
        },
        data() {},
      },
    })
  )
  return { ports: listeners.map((l) => l.port), attempts, stop: () => listeners.forEach((l) => l.stop(true)) }
}

describe('connecting in turn', () => {
  test('amqplib’s recovery tries every URL once, in turn from the first given, before it gives up at startup', async () => {
    const brokers = refusingBrokers(3)
    try {
      const urls = brokers.ports.map((port) => `amqp://guest:guest@127.0.0.1:${port}`)
      const open = (address: BrokerAddress, options: { recovery: amqp.RecoveryOptions }) =>
        amqp.connect(address, options)
      // initialMaxRetries 1 would stop after two URLs: every URL gets its attempt.
      const connecting = connectInTurn(
        open,
        urls,
        { recovery: { initialMaxRetries: 1, initialDelay: 10, jitter: 0 } },
        1
      )
      await expect(connecting).rejects.toThrow()
      const [a, b, c] = brokers.ports
      expect(brokers.attempts).toEqual([b!, c!, a!])
    } finally {
      brokers.stop()
    }
  })

  test('a lost connection moves the next attempt to the next URL, and past the last back to the first', async () => {
    const seen: string[] = []
    const connection = Object.assign(new EventEmitter(), { waitForConnect: async () => undefined })
    let address: BrokerAddress | undefined
    const connect = async (given: BrokerAddress) => {
      address = given
      return connection
    }
    const snapshot = () => seen.push(`${address!.hostname}:${address!.port} ${address!.username}`)
    const { current } = await connectInTurn(
      connect,
      ['amqp://a:b@one:1', 'amqp://c:d@two:2', 'amqp://three:3'],
      { recovery: {} },
      0
    )
    snapshot()
    expect(current()).toBe('amqp://one:1')
    connection.emit('disconnect', new Error('gone'))
    snapshot()
    expect(current()).toBe('amqp://two:2')
    connection.emit('connect-failed', new Error('refused'))
    snapshot()
    connection.emit('connect-failed', new Error('refused'))
    snapshot()
    // The URL without credentials gets none: not the previous node's.
    expect(seen).toEqual(['one:1 a', 'two:2 c', 'three:3 undefined', 'one:1 a'])
  })

  test('recovery resolves without waiting for the first connection, so the rotation is on before the first attempt', async () => {
    let given: unknown
    const connection = Object.assign(new EventEmitter(), { waitForConnect: async () => undefined })
    await connectInTurn(
      async (
        _address: BrokerAddress,
        options: { recovery: { initialMaxRetries?: number; waitForConnect?: boolean } }
      ) => {
        given = options.recovery
        return connection
      },
      ['amqp://a', 'amqp://b', 'amqp://c'],
      { recovery: { initialMaxRetries: 0 } }
    )
    expect(given).toEqual({ initialMaxRetries: 2, waitForConnect: false })
  })
})

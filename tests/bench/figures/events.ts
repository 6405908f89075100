/**
 * Figure 17: event fan-out. 1,000 WebSockets, each subscribed to 10 of 100 media (so 100 sockets follow each), then
 * every media reprocessed: the time from a change applied (its `at` in the log, on the same clock) to each socket's
 * message, and the API's resident memory with the sockets open against before them.
 */
import { apiKey } from '../../helpers/env.ts'
import { openSocket, until } from '../../helpers/event-clients.ts'
import { rssOf, untilCompleted, upload, type Stack } from '../stack.ts'
import { percentile, type Bench, type Figure } from '../stats.ts'
import { photo } from '../work.ts'

const SOCKETS = 1000
const MEDIA = 100
const EACH = 10

export async function eventsFigure(bench: Bench, stack: Stack): Promise<Figure> {
  bench.say(`figure 17: ${SOCKETS} sockets × ${EACH} media, event fan-out`)
  const image = await photo(64, 64)
  const ids: string[] = []
  for (let i = 0; i < MEDIA; i += 8) {
    const batch = await Promise.all(Array.from({ length: Math.min(8, MEDIA - i) }, () => upload(stack.url, image)))
    ids.push(...batch)
  }
  for (const id of ids) await untilCompleted(stack.url, id)
  Bun.gc(true)
  const rssBefore = rssOf(stack.pids.api)

  const url = `${stack.url.replace('http', 'ws')}/v1/ws`
  const latencies: number[] = []
  const sockets = Array.from({ length: SOCKETS }, () => openSocket(url, { headers: apiKey }))
  for (const [i, socket] of sockets.entries()) {
    await socket.opened
    socket.ws.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data)) as { type: string; event?: { id?: number; at?: string } }
      if (message.type === 'event' && message.event?.at) latencies.push(Date.now() - Date.parse(message.event.at))
    })
    socket.send({ type: 'subscribe', media: Array.from({ length: EACH }, (_, k) => ids[(i * EACH + k) % MEDIA]) })
  }
  await until(() => sockets.every((s) => s.of('subscribed').length === 1), 'every socket subscribed', 60_000)
  const rssOpen = rssOf(stack.pids.api)

  // Every media reprocessed: each of its changes goes to the 100 sockets that follow it.
  for (const id of ids) {
    const res = await fetch(`${stack.url}/v1/media/${id}/reprocess`, {
      method: 'POST',
      body: '{}',
      headers: { ...apiKey, 'content-type': 'application/json' },
    })
    if (res.status !== 202) throw new Error(`reprocess answered ${res.status}: ${await res.text()}`)
  }
  const finals = () =>
    sockets.reduce((n, s) => n + s.events().filter((e) => e.type === 'completed' && e.id !== undefined).length, 0)
  await until(() => finals() === SOCKETS * EACH, 'every socket to hear every reprocess complete', 120_000)
  const rssAfter = rssOf(stack.pids.api)
  for (const socket of sockets) socket.close()

  const p50 = percentile(latencies, 50)
  const p99 = percentile(latencies, 99)
  const grown = (Math.max(rssOpen, rssAfter) - rssBefore) / 1e6
  return {
    id: 17,
    what: `event fan-out: ${SOCKETS} WebSockets × ${EACH} media (100 per media), every media reprocessed: change applied → message (ms); the API's RSS growth (MB)`,
    value: `p50 ${p50} ms, p99 ${p99} ms over ${latencies.length} messages; RSS +${grown.toFixed(0)} MB`,
    baseline: `the API before the sockets: ${(rssBefore / 1e6).toFixed(0)} MB`,
    ratio: null,
    target: 'p99 ≤ 100 ms; RSS growth ≤ 50 MB',
    pass: p99 <= 100 && grown <= 50,
    note: `RSS ${(rssBefore / 1e6).toFixed(0)} MB before, ${(rssOpen / 1e6).toFixed(0)} MB with the sockets subscribed, ${(rssAfter / 1e6).toFixed(0)} MB after the fan-out. The latency is measured from the change's time in the log (written in its transaction, before the commit) to the client's receipt, on one clock.`,
    data: { p50, p99, messages: latencies.length, rssBefore, rssOpen, rssAfter },
  }
}

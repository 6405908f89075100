/**
 * Interactive work behind a bulk backlog, measured the one way the scheduling test asserts and the benchmark
 * (figure 16) records: an interactive upload's wait (accepted to processing) and total (accepted to completed) alone
 * and behind `backlog` bulk uploads, and the bulk jobs started per second with and without interactive traffic.
 * Everything goes through the API and the processor's metrics, so it runs the same against the test stack and
 * against `bun run start`.
 */

export interface BacklogProbe {
  /** Uploads `bytes` (POST /v1/media, `?priority=bulk` when asked) and resolves with the answer's media id and class. */
  upload(bytes: Uint8Array<ArrayBuffer>, priority?: 'bulk'): Promise<{ id: string; priority: string }>
  /** GET on the API with the key: the media's event stream. */
  events(id: string): Promise<Response>
  /** The image processor's `media_processor_jobs_started_total{class="bulk"}` now. */
  bulkStarted(): Promise<number>
}

export interface Timing {
  /** From the 202 to the first `processing` event (an upper bound: the stream opens after the 202). */
  waitMs: number
  /** From the 202 to the `completed` event. */
  totalMs: number
}

export interface BacklogFigures {
  alone: Timing[]
  behind: Timing[]
  /** Bulk jobs started per second with no interactive traffic, and while interactive uploads flow one after another. */
  bulkAlonePerSecond: number
  bulkWithInteractivePerSecond: number
  /** Bulk jobs started by the end of the measurement, of `backlog`: the backlog must not have run out. */
  bulkStartedAtEnd: number
}

/** Uploads one interactive photo and times it from its event stream. */
export async function timeInteractive(probe: BacklogProbe, photo: Uint8Array<ArrayBuffer>): Promise<Timing> {
  const { id, priority } = await probe.upload(photo)
  const accepted = performance.now()
  if (priority !== 'interactive') throw new Error(`an upload asked nothing of its class and got ${priority}`)
  const stream = await probe.events(id)
  const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader()
  let text = ''
  let waitMs: number | null = null
  for (;;) {
    const { value, done } = await reader.read()
    if (done) throw new Error(`the event stream of ${id} ended before it completed: ${text.slice(-300)}`)
    text += value
    const now = performance.now() - accepted
    if (waitMs === null && /"status":"(processing|completed)"/.test(text)) waitMs = now
    if (text.includes('"status":"completed"')) {
      await reader.cancel().catch(() => {})
      return { waitMs: waitMs!, totalMs: now }
    }
    if (/"status":"(failed|cancelled)"/.test(text)) throw new Error(`media ${id} did not complete: ${text.slice(-300)}`)
  }
}

export async function measureBacklog(
  probe: BacklogProbe,
  photo: Uint8Array<ArrayBuffer>,
  options: { backlog: number; alone: number; behind: number; windowMs: number }
): Promise<BacklogFigures> {
  await timeInteractive(probe, photo) // a warm-up: the first job of a processor pays for loading its libraries
  const alone: Timing[] = []
  for (let i = 0; i < options.alone; i++) alone.push(await timeInteractive(probe, photo))
  const startedBefore = await probe.bulkStarted()
  for (let i = 0; i < options.backlog; i++) {
    const { priority } = await probe.upload(photo, 'bulk')
    if (priority !== 'bulk') throw new Error(`an upload asked to be bulk got ${priority}`)
  }
  // Bulk work alone: what it starts over a fixed window (a measurement, not a wait for something to happen).
  const rateOver = async (during: () => Promise<void>) => {
    const from = await probe.bulkStarted()
    const t0 = performance.now()
    await during()
    return ((await probe.bulkStarted()) - from) / ((performance.now() - t0) / 1000)
  }
  const bulkAlonePerSecond = await rateOver(() => Bun.sleep(options.windowMs))
  const behind: Timing[] = []
  const bulkWithInteractivePerSecond = await rateOver(async () => {
    for (let i = 0; i < options.behind; i++) behind.push(await timeInteractive(probe, photo))
  })
  const bulkStartedAtEnd = (await probe.bulkStarted()) - startedBefore
  return { alone, behind, bulkAlonePerSecond, bulkWithInteractivePerSecond, bulkStartedAtEnd }
}

/** `media_processor_jobs_started_total{class="bulk"}` in a Prometheus text exposition (0 when absent). */
export function bulkStartedIn(metrics: string): number {
  let total = 0
  for (const line of metrics.split('\n'))
    if (line.startsWith('media_processor_jobs_started_total{') && line.includes('class="bulk"'))
      total += Number(line.split(' ').pop())
  return total
}

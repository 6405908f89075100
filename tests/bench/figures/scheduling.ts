/**
 * Figure 16: an interactive 2 MP upload behind 200 queued bulk jobs on the image processor's 2 slots, beside the same
 * upload alone (just before, same run), and the bulk jobs started per second without and with uploads flowing. The
 * measurement is tests/helpers/backlog.ts, which tests/scheduling.test.ts asserts on; here it is recorded. It runs last
 * on its stack: what is left of the backlog goes with the stack's namespace.
 */
import { bulkStartedIn, measureBacklog, type BacklogProbe } from '../../helpers/backlog.ts'
import { apiKey } from '../../helpers/env.ts'
import type { Stack } from '../stack.ts'
import { median, spread, type Bench, type Figure } from '../stats.ts'
import { photo } from '../work.ts'

const BACKLOG = 200

export async function schedulingFigure(bench: Bench, stack: Stack): Promise<Figure> {
  bench.say(`figure 16: an upload behind ${BACKLOG} bulk jobs`)
  const probe: BacklogProbe = {
    async upload(bytes, priority) {
      const res = await fetch(`${stack.url}/v1/media${priority ? `?priority=${priority}` : ''}`, {
        method: 'POST',
        body: bytes,
        headers: apiKey,
      })
      if (res.status !== 202) throw new Error(`upload answered ${res.status}: ${await res.text()}`)
      return (await res.json()) as { id: string; priority: string }
    },
    events: (id) => fetch(`${stack.url}/v1/media/${id}/events`, { headers: apiKey }),
    bulkStarted: async () => bulkStartedIn(await (await fetch(`${stack.metrics.images}/metrics`)).text()),
  }
  const figures = await measureBacklog(probe, await photo(1600, 1200), {
    backlog: BACKLOG,
    alone: bench.quick ? 3 : 7,
    behind: bench.quick ? 5 : 15,
    windowMs: bench.quick ? 2_000 : 5_000,
  })
  if (figures.bulkStartedAtEnd >= BACKLOG) throw new Error('the bulk backlog ran out before the measurement ended')
  const alone = figures.alone.map((t) => t.totalMs)
  const behind = figures.behind.map((t) => t.totalMs)
  const waits = figures.behind.map((t) => t.waitMs)
  const pace = figures.bulkWithInteractivePerSecond / figures.bulkAlonePerSecond
  const ratio = median(behind) / median(alone)
  return {
    id: 16,
    what: `interactive 2 MP upload behind ${BACKLOG} bulk jobs (2 slots): total; wait`,
    value: `${median(behind).toFixed(0)} ms (${spread(behind, 0)}); wait ${median(waits).toFixed(0)} ms (${spread(waits, 0)})`,
    baseline: `alone ${median(alone).toFixed(0)} ms (${spread(alone, 0)})`,
    ratio,
    target: 'wait < one job; total ≤ 2 × alone; bulk ≥ 40 % of its pace',
    pass: Math.max(...waits) < median(alone) && ratio <= 2 && pace >= 0.4,
    note: `bulk jobs started ${figures.bulkAlonePerSecond.toFixed(2)}/s alone and ${figures.bulkWithInteractivePerSecond.toFixed(2)}/s while uploads flowed one after another (${(pace * 100).toFixed(0)} %); ${figures.bulkStartedAtEnd} of ${BACKLOG} bulk jobs had started by the end. The wait is from the 202 to the first "processing" event on the media's stream, opened after the 202 (an upper bound).`,
    data: { ...figures },
  }
}

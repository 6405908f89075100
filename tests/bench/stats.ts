/** What every figure of the benchmark suite reports, and the arithmetic they share. */

export interface Figure {
  id: number
  what: string
  /** The measured value: median and spread, in the figure's unit. */
  value: string
  baseline: string
  /** Measured against the baseline (a rate over a rate, a time over a time), or null when it is not a ratio. */
  ratio: number | null
  target: string
  /** null: reported only, no target. */
  pass: boolean | null
  /** Where the time or the CPU went, printed under the table. */
  note?: string
  /** Raw numbers, kept in latest.json. */
  data?: Record<string, unknown>
}

/** What a figure module gets: whether this is a quick run, and a place for its temporary files. */
export interface Bench {
  quick: boolean
  work: string
  /** Progress for the person running it (stderr). */
  say(line: string): void
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
export const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!
export const spread = (xs: number[], digits = 2) =>
  `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`
export const MiB = 1024 * 1024

/**
 * Times `ours` and its `baseline` in turns, `rounds` times each, so that drift in the machine (heat, other work) falls
 * on both alike; resolves with each one's times.
 */
export async function alternate(
  rounds: number,
  baseline: () => Promise<number>,
  ours: () => Promise<number>
): Promise<{ bare: number[]; ours: number[] }> {
  const times = { bare: [] as number[], ours: [] as number[] }
  for (let i = 0; i < rounds; i++) {
    times.bare.push(await baseline())
    times.ours.push(await ours())
  }
  return times
}

/** Jobs per second: `count` runs of `run`, at most `inFlight` at once. */
export async function rate(count: number, inFlight: number, run: (index: number) => Promise<unknown>): Promise<number> {
  const started = performance.now()
  let next = 0
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      for (let index = next++; index < count; index = next++) await run(index)
    })
  )
  return count / ((performance.now() - started) / 1000)
}

/** Runs a program and fails with its stderr when it exits non-zero. */
export async function exec(program: string, args: string[]): Promise<void> {
  const child = Bun.spawn([program, ...args], { stdin: 'ignore', stdout: 'ignore', stderr: 'pipe' })
  const code = await child.exited
  if (code !== 0)
    throw new Error(`${program} ${args.join(' ')} failed (${code}): ${await new Response(child.stderr).text()}`)
}

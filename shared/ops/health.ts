/**
 * Liveness and readiness, the same on every service. `/livez` answers while the process can answer at all (a
 * supervisor restarts it when it cannot); `/readyz` answers 200 only when what the service needs is reachable now,
 * and 503 naming what is not (a load balancer or an operator stops sending it work meanwhile).
 */

/** A named check: resolves when the thing is reachable, throws saying why not. */
export type Check = () => Promise<void> | void

export type CheckResult = { ok: true } | { ok: false; error: string }

export interface Readiness {
  ready: boolean
  /** The names of the checks that failed. */
  down: string[]
  checks: Record<string, CheckResult>
}

/** A check still unanswered after this long has failed: a probe must answer quickly, even when S3 hangs. */
export const CHECK_TIMEOUT_MS = 2_000

/** Runs every check at once, each bounded by `timeoutMs`. */
export async function runChecks(checks: Record<string, Check>, timeoutMs = CHECK_TIMEOUT_MS): Promise<Readiness> {
  const entries = await Promise.all(
    Object.entries(checks).map(async ([name, check]): Promise<[string, CheckResult]> => {
      let timer: ReturnType<typeof setTimeout> | undefined
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
      })
      try {
        await Promise.race([Promise.resolve().then(check), late])
        return [name, { ok: true }]
      } catch (error) {
        return [name, { ok: false, error: (error as Error).message || (error as Error).name || String(error) }]
      } finally {
        clearTimeout(timer)
      }
    })
  )
  const down = entries.filter(([, result]) => !result.ok).map(([name]) => name)
  return { ready: down.length === 0, down, checks: Object.fromEntries(entries) }
}

/** The bodies of `/livez` and `/readyz`, and their statuses. */
export const livez = () => ({ status: 200 as const, body: { status: 'alive' } })
export const readyz = (readiness: Readiness) => ({
  status: readiness.ready ? (200 as const) : (503 as const),
  body: { status: readiness.ready ? 'ready' : 'unavailable', down: readiness.down, checks: readiness.checks },
})

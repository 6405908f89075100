/**
 * The images' HEALTHCHECK: `bun infra/docker/healthcheck.ts <PORT variable>` asks `/livez` on the port that
 * variable names (`PORT` for the API, `METRICS_PORT` for a processor) and exits 0 on a 2xx, 1 otherwise. Bun
 * itself, because the slim base image has no curl or wget.
 *
 * Liveness, not readiness: a broker or S3 outage makes `/readyz` answer 503, and an orchestrator that restarts
 * unhealthy containers would then restart every service at once for a fault none of them can fix; they recover by
 * themselves when the dependency returns.
 */

/** Whether `url` answers 2xx within `timeoutMs`. Never throws. */
export async function probe(url: string, timeoutMs: number): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
    await response.body?.cancel()
    return response.ok
  } catch {
    return false
  }
}

/** The URL to probe, from the name of the variable that holds the port; null when that variable is not a port. */
export function livezUrl(portVariable: string, env: Record<string, string | undefined>): string | null {
  const port = env[portVariable]
  if (!port || !/^\d{1,5}$/.test(port)) return null
  return `http://127.0.0.1:${port}/livez`
}

if (import.meta.main) {
  const variable = process.argv[2] ?? 'PORT'
  const url = livezUrl(variable, process.env)
  if (!url) {
    console.error(`healthcheck: ${variable} is not set to a port`)
    process.exit(1)
  }
  // Below the HEALTHCHECK --timeout, so a hung service is reported by this script rather than killed by Docker.
  process.exit((await probe(url, 3000)) ? 0 : 1)
}

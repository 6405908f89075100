/**
 * The small HTTP listener of a service that has no HTTP API of its own (a processor): `/metrics`, `/livez` and
 * `/readyz` on one port. node:http, so it runs wherever the service does.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { livez, readyz, runChecks, type Check } from './health.ts'
import type { Registry } from './metrics.ts'

export interface OpsServer {
  port: number
  close(): Promise<void>
}

export function startOpsServer(options: {
  port: number
  /** Where to listen; all interfaces by default, as a container's probes and Prometheus come from outside it. */
  hostname?: string
  registry: Registry
  checks: () => Record<string, Check>
}): Promise<OpsServer> {
  const server = createServer((request, response) => {
    const send = (status: number, body: string, type = 'application/json') => {
      response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' })
      response.end(body)
    }
    const path = new URL(request.url ?? '/', 'http://localhost').pathname
    if (request.method !== 'GET' && request.method !== 'HEAD') return send(405, JSON.stringify({ error: 'only GET' }))
    if (path === '/livez') return send(livez().status, JSON.stringify(livez().body))
    if (path === '/readyz') {
      return void runChecks(options.checks()).then((readiness) => {
        const answer = readyz(readiness)
        send(answer.status, JSON.stringify(answer.body))
      })
    }
    if (path === '/metrics') {
      return void options.registry.metrics().then(
        (text) => send(200, text, options.registry.contentType),
        (error: Error) => send(500, JSON.stringify({ error: error.message }))
      )
    }
    send(404, JSON.stringify({ error: `no route for ${path}; try /metrics, /livez or /readyz` }))
  })
  return new Promise((resolve, reject) => {
    server.once('error', (error) =>
      reject(new Error(`cannot listen on METRICS_PORT ${options.port}: ${error.message}`, { cause: error }))
    )
    server.listen(options.port, options.hostname ?? '0.0.0.0', () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () => new Promise<void>((done) => server.close(() => done())),
      })
    })
  })
}

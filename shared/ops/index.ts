/**
 * @module @app/shared/ops: what every service needs to be operated: JSON logs, Prometheus metrics, liveness and
 * readiness. Not re-exported by `@app/shared` (the protocol), so a backend that needs only the schemas pulls in
 * valibot alone.
 */
export {
  LOG_LEVELS,
  LogEnv,
  createLogger,
  logSettings,
  silentLogger,
  traceFields,
  type LogFormat,
  type LogLevel,
  type LogSettings,
  type Logger,
} from './log.ts'
export {
  Counter,
  DURATION_BUCKETS,
  Gauge,
  Histogram,
  SIZE_BUCKETS,
  commonMetrics,
  createRegistry,
  metricsOn,
  metricsResponse,
  type CommonMetrics,
  type Registry,
} from './metrics.ts'
export { CHECK_TIMEOUT_MS, livez, readyz, runChecks, type Check, type CheckResult, type Readiness } from './health.ts'
export { startOpsServer, type OpsServer } from './server.ts'

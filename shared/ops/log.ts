/**
 * Every service's log: one JSON object a line (pino), with the service's name on each, and the job, media, tenant
 * and trace ids on the lines where they are known, so a log store can follow one upload from the HTTP request into
 * the processor that handled it. A person running a service in a terminal gets readable lines instead. LOG_FILE sends
 * the lines to a file instead of stdout.
 */
import pino, { type DestinationStream, type Logger } from 'pino'
import pinoPretty from 'pino-pretty'
import * as v from 'valibot'
import type { TraceContext } from '../trace.ts'

export type { Logger } from 'pino'

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]
/** `auto`: readable lines on a terminal, JSON otherwise (a pipe, a file, a container's log driver). */
export type LogFormat = 'json' | 'pretty' | 'auto'

export const LogEnv = {
  LOG_LEVEL: v.optional(v.picklist(LOG_LEVELS, `must be one of ${LOG_LEVELS.join(', ')}`), 'info'),
  LOG_FORMAT: v.optional(v.picklist(['json', 'pretty', 'auto'], 'must be json, pretty or auto'), 'auto'),
  /** Unset or empty: stdout. */
  LOG_FILE: v.optional(v.string()),
}

export interface LogSettings {
  level: LogLevel
  format: LogFormat
  /** A path to append the lines to, instead of stdout. */
  file?: string
}

export function logSettings(env: { LOG_LEVEL: LogLevel; LOG_FORMAT: LogFormat; LOG_FILE?: string }): LogSettings {
  return { level: env.LOG_LEVEL, format: env.LOG_FORMAT, ...(env.LOG_FILE ? { file: env.LOG_FILE } : {}) }
}

/**
 * The root logger of a service. `destination` is for tests (a stream to read the lines back); otherwise stdout, or
 * `settings.file`, written synchronously so that the last lines before an exit are not lost.
 */
export function createLogger(service: string, settings: LogSettings, destination?: DestinationStream): Logger {
  const file = destination ? undefined : settings.file
  const pretty =
    settings.format === 'pretty' ||
    (settings.format === 'auto' && !destination && !file && process.stdout.isTTY === true)
  const options: pino.LoggerOptions = {
    level: settings.level,
    base: { service },
    // Level names rather than numbers, and ISO times: what log stores and people both read.
    formatters: { level: (label) => ({ level: label }) },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Connection URLs can hold passwords; error objects are written with their stack.
    serializers: { err: pino.stdSerializers.err },
  }
  const out = file === undefined ? undefined : fileDestination(file)
  if (pretty)
    return pino(
      options,
      pinoPretty({
        colorize: !out,
        sync: true,
        destination: out,
        ignore: 'pid,hostname,service',
        messageFormat: `${service}: {msg}`,
      })
    )
  return pino(options, destination ?? out ?? pino.destination({ dest: 1, sync: true }))
}

/**
 * One open file per path, shared by the loggers of a process (tests start many services in one). Appended to, never
 * truncated, and written with O_APPEND, so that several processes can share a file without overwriting each other.
 */
const files = new Map<string, DestinationStream>()
function fileDestination(path: string): DestinationStream {
  let out = files.get(path)
  if (!out) files.set(path, (out = pino.destination({ dest: path, sync: true, append: true, mkdir: true })))
  return out
}

/** The fields that tie a line to a trace: the W3C ids, camel-cased like the other ids on our lines. */
export function traceFields(context: TraceContext | null | undefined): { traceId?: string; spanId?: string } {
  return context ? { traceId: context.traceId, spanId: context.spanId } : {}
}

/** A logger that writes nothing: for code whose caller gives none (tests of pure parts). */
export const silentLogger = (): Logger => pino({ level: 'silent' })

/**
 * Every service's log: one JSON object a line (pino), with the service's name on each, and the job, media, tenant
 * and trace ids on the lines where they are known, so a log store can follow one upload from the HTTP request into
 * the processor that handled it. A person running a service in a terminal gets readable lines instead.
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
}

export interface LogSettings {
  level: LogLevel
  format: LogFormat
}

export function logSettings(env: { LOG_LEVEL: LogLevel; LOG_FORMAT: LogFormat }): LogSettings {
  return { level: env.LOG_LEVEL, format: env.LOG_FORMAT }
}

/**
 * The root logger of a service. `destination` is for tests (a stream to read the lines back); otherwise stdout,
 * written synchronously so that the last lines before an exit are not lost.
 */
export function createLogger(service: string, settings: LogSettings, destination?: DestinationStream): Logger {
  const pretty = settings.format === 'pretty' || (settings.format === 'auto' && !destination && process.stdout.isTTY === true)
  const options: pino.LoggerOptions = {
    level: settings.level,
    base: { service },
    // Level names rather than numbers, and ISO times: what log stores and people both read.
    formatters: { level: (label) => ({ level: label }) },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Connection URLs can hold passwords; error objects are written with their stack.
    serializers: { err: pino.stdSerializers.err },
  }
  if (pretty) return pino(options, pinoPretty({ colorize: true, sync: true, ignore: 'pid,hostname,service', messageFormat: `${service}: {msg}` }))
  return pino(options, destination ?? pino.destination({ dest: 1, sync: true }))
}

/** The fields that tie a line to a trace: the W3C ids, camel-cased like the other ids on our lines. */
export function traceFields(context: TraceContext | null | undefined): { traceId?: string; spanId?: string } {
  return context ? { traceId: context.traceId, spanId: context.spanId } : {}
}

/** A logger that writes nothing: for code whose caller gives none (tests of pure parts). */
export const silentLogger = (): Logger => pino({ level: 'silent' })

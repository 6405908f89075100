/**
 * Where the services a test file starts write their logs, so that a passing run prints none of them: one file per
 * test file, `tests/artifacts/logs/<its path under tests/>.log` (tests/faults/broker.test.ts → faults/broker.test.log).
 * In-process services get it as LOG_FILE (`testEnv`), child processes' output is copied into it (`ServiceProcess`).
 * `bun run test` (tests/run.ts) prints the end of it for a file with a failing test.
 */
import { mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs'
import { basename, dirname, join, relative, resolve } from 'node:path'

const TESTS = resolve(import.meta.dir, '..')
export const ARTIFACTS = join(TESTS, 'artifacts')
export const LOGS_DIR = join(ARTIFACTS, 'logs')

/** The log of a test file (absolute, or relative to the working directory as the runner's report gives it). */
export function logFileOf(testFile: string): string {
  const path = relative(TESTS, resolve(testFile))
  const name = path.startsWith('..') ? basename(path) : path
  return join(LOGS_DIR, `${name.replace(/\.[cm]?[jt]sx?$/, '')}.log`)
}

/** Open log files of this process, by path. */
const open = new Map<string, number>()

/**
 * The log of the test file that runs now (`bun test` sets `Bun.main` to each file as it loads it), emptied the first
 * time this run asks for it so that it holds this run's lines only.
 */
export function testLogFile(): string {
  const path = logFileOf(Bun.main)
  if (!open.has(path)) {
    mkdirSync(dirname(path), { recursive: true })
    writeFileSync(path, '')
    // O_APPEND: the services of the file (pino in this process, other processes) write to it too.
    open.set(path, openSync(path, 'a'))
  }
  return path
}

/** Appends `text` to a log file (the running test file's unless told). */
export function appendLog(text: string, path = testLogFile()): void {
  let fd = open.get(path)
  if (fd === undefined) {
    mkdirSync(dirname(path), { recursive: true })
    open.set(path, (fd = openSync(path, 'a')))
  }
  writeSync(fd, text)
}

/**
 * Writes a report a test file makes (a matrix) to `tests/artifacts/<name>`, and into the file's log so that a failing
 * run prints it with the services' lines. Returns the report's path.
 */
export function writeReport(name: string, text: string): string {
  const path = join(ARTIFACTS, name)
  mkdirSync(dirname(path), { recursive: true })
  writeFileSync(path, `${text}\n`)
  appendLog(`\n${name}:\n${text}\n`)
  return path
}

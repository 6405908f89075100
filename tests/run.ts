/**
 * `bun run test` after the typecheck: `bun test` with the arguments given, its output as it is, then, for each
 * test file with a failing test, the end of the log its services wrote (tests/helpers/logs.ts) and where the whole
 * log is. The failing files come from the runner's JUnit report. Exits with the runner's code.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { LOGS_DIR, logFileOf } from './helpers/logs.ts'

const TAIL_LINES = 200
/** A line longer than this is cut: a log line can carry a whole request body. */
const MAX_LINE = 2000

const reportDir = mkdtempSync(join(tmpdir(), 'bun-test-report-'))
const report = join(reportDir, 'junit.xml')
const started = Date.now()
const runner = Bun.spawn(
  [process.execPath, 'test', ...Bun.argv.slice(2), '--reporter=junit', `--reporter-outfile=${report}`],
  {
    stdio: ['inherit', 'inherit', 'inherit'],
  }
)
// Ctrl-C reaches the runner too (one process group): wait for it, it still prints what ran. A SIGTERM is passed on.
process.on('SIGINT', () => {})
process.on('SIGTERM', () => runner.kill('SIGTERM'))
const code = await runner.exited

const shown = (path: string) => relative(process.cwd(), path) || path
const written = logsWrittenSince(started)
if (code !== 0) {
  const failed = failedFiles(read(report))
  for (const [file, count] of failed) printLog(file, count)
  // No failed test in the report: the runner stopped outside any test (a crash, an error between tests).
  if (failed.size === 0 && written.length) console.error(`\nLogs written by this run: ${written.map(shown).join(', ')}`)
}
if ((code !== 0 && written.length) || process.env.CI) {
  console.error(`\nLogs of the services tests started, one file per test file: ${shown(LOGS_DIR)}/`)
}
rmSync(reportDir, { recursive: true, force: true })
process.exit(code)

/** Test files with failing tests, and how many, from a JUnit report (`file` is on each testcase). */
function failedFiles(xml: string): Map<string, number> {
  const failed = new Map<string, number>()
  for (const [, attributes, body] of xml.matchAll(/<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g)) {
    if (!body || !/<(failure|error)\b/.test(body)) continue
    const file = unescapeXml(/\bfile="([^"]*)"/.exec(attributes!)?.[1] ?? '')
    if (file) failed.set(file, (failed.get(file) ?? 0) + 1)
  }
  return failed
}

function printLog(testFile: string, failures: number): void {
  const path = logFileOf(testFile)
  const heading = `\n── ${testFile}: ${failures} failed`
  const log = writtenSince(path, started) ? read(path) : ''
  if (!log) return console.error(`${heading}; its tests started no service (no log) ──`)
  const lines = log.trimEnd().split('\n')
  const tail = lines.slice(-TAIL_LINES).map((line) => (line.length > MAX_LINE ? `${line.slice(0, MAX_LINE)}…` : line))
  const which = lines.length > TAIL_LINES ? `the last ${TAIL_LINES} of ${lines.length} lines` : 'the lines'
  console.error(`${heading}; ${which} its services logged (${shown(path)}) ──\n${tail.join('\n')}`)
}

function logsWrittenSince(time: number): string[] {
  try {
    return [...new Bun.Glob('**/*.log').scanSync({ cwd: LOGS_DIR, absolute: true })]
      .filter((path) => writtenSince(path, time))
      .sort()
  } catch {
    return [] // no test has written a log yet
  }
}

function writtenSince(path: string, time: number): boolean {
  try {
    return statSync(path).mtimeMs >= time
  } catch {
    return false
  }
}

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

function unescapeXml(text: string): string {
  const named: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }
  return text.replace(/&(amp|lt|gt|quot|apos);/g, (_, name: string) => named[name]!)
}

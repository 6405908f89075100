/**
 * One service of the system under test as a child process, so a fault test can SIGKILL, SIGSTOP and restart it.
 * Its stdout and stderr are kept as one log (across restarts) and copied with a `[name]` prefix to the test file's
 * log (tests/helpers/logs.ts), which shows what each process said around a fault when a test fails.
 */
import type { Subprocess } from 'bun'
import { appendLog, testLogFile } from './logs.ts'

/** What runs a service's entry file. Every service runs on Bun; the API (and `shared/`) also on Deno. */
export type Runtime = 'bun' | 'deno'

/** The path of `runtime`'s executable, or an error that says how to install it (a test that needs it fails). */
export function runtimePath(runtime: Runtime): string {
  const path = Bun.which(runtime)
  if (!path)
    throw new Error(
      `${runtime} is not installed (not on PATH): run \`bash infra/setup.sh\`, which installs it from npm`
    )
  return path
}

export interface Exit {
  code: number | null
  signal: string | null
  /** False when the process ended without the test asking it to: a crash. */
  expected: boolean
}

/** Every child started by any harness, so an aborted run still kills them (see `killAllChildren`). */
const everyChild = new Set<ServiceProcess>()

export class ServiceProcess {
  /** stdout and stderr of every run of the process, line by line. */
  log = ''
  readonly exits: Exit[] = []
  private child: Subprocess<'ignore', 'pipe', 'pipe'> | undefined
  private running = false
  private paused = false
  private expectExit = false
  private exited: Promise<void> = Promise.resolve()
  /** Where the output is copied: `env.LOG_FILE` (set by `testEnv`), else the running test file's log. */
  private readonly logFile: string
  /**
   * `env` without LOG_FILE: the child logs to stdout, which tests read through `log` and `waitForLog`, and from
   * which it reaches `logFile` anyway.
   */
  private readonly childEnv: Record<string, string>

  constructor(
    readonly name: string,
    private readonly argv: string[],
    readonly env: Record<string, string>,
    /** The log line that says the process is ready (the API's "listening", a processor's "consuming"). */
    private readonly ready: RegExp
  ) {
    const { LOG_FILE, ...childEnv } = env
    this.logFile = LOG_FILE || testLogFile()
    this.childEnv = childEnv
  }

  get pid(): number | undefined {
    return this.running ? this.child?.pid : undefined
  }

  get alive(): boolean {
    return this.running
  }

  /** Exits the test did not cause. */
  get crashes(): Exit[] {
    return this.exits.filter((e) => !e.expected)
  }

  /** Where the log ends now: pass it to `waitForLog` to look only at what comes after. */
  mark(): number {
    return this.log.length
  }

  /** Spawns the process and resolves once it logs its ready line; rejects if it exits or stays silent first. */
  async start(timeoutMs = 20_000): Promise<void> {
    if (this.running) throw new Error(`${this.name} is already running (pid ${this.pid})`)
    const from = this.mark()
    this.expectExit = false
    this.paused = false
    const child = Bun.spawn(this.argv, {
      env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/root', ...this.childEnv },
      stdin: 'ignore',
      stdout: 'pipe',
      stderr: 'pipe',
    })
    this.child = child
    this.running = true
    everyChild.add(this)
    void this.pump(child.stdout)
    void this.pump(child.stderr)
    this.exited = child.exited.then(() => {
      this.running = false
      const exit = {
        code: child.exitCode,
        signal: child.signalCode === null ? null : String(child.signalCode),
        expected: this.expectExit,
      }
      this.exits.push(exit)
      if (!exit.expected) this.append(`!! exited unexpectedly (code ${exit.code}, signal ${exit.signal})`)
    })
    const ended = this.exited.then(() => {
      throw new Error(`${this.name} exited before it was ready:\n${this.log.slice(from)}`)
    })
    await Promise.race([this.waitForLog(this.ready, timeoutMs, from), ended])
  }

  /** Sends `signal` (SIGKILL unless told) and waits until the process is gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL', timeoutMs = 30_000): Promise<void> {
    if (!this.running) return
    this.expectExit = true
    this.child!.kill(signal)
    if (this.paused && signal !== 'SIGKILL') process.kill(this.child!.pid, 'SIGCONT')
    const timedOut = Bun.sleep(timeoutMs).then(() => 'timeout' as const)
    if ((await Promise.race([this.exited, timedOut])) === 'timeout') {
      this.child!.kill('SIGKILL')
      await this.exited
      throw new Error(`${this.name} did not exit within ${timeoutMs} ms of ${signal}; it was SIGKILLed`)
    }
    this.paused = false
  }

  /** SIGKILLs the process (if it runs) and starts it again with the same environment. */
  async restart(): Promise<void> {
    await this.kill('SIGKILL')
    await this.start()
  }

  /** SIGSTOP: the process freezes, its sockets stay open. */
  pause(): void {
    if (!this.running) throw new Error(`${this.name} is not running`)
    process.kill(this.child!.pid, 'SIGSTOP')
    this.paused = true
  }

  /** SIGCONT after `pause`. */
  resume(): void {
    if (!this.running || !this.paused) return
    process.kill(this.child!.pid, 'SIGCONT')
    this.paused = false
  }

  /** Resolves with the first match of `pattern` in the log after `from`; rejects after `timeoutMs`. */
  async waitForLog(pattern: RegExp, timeoutMs: number, from = 0): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const match = this.log.slice(from).match(pattern)
      if (match) return match
      if (Date.now() > deadline) {
        throw new Error(
          `${this.name} did not log ${pattern} within ${timeoutMs} ms; its log since then:\n${this.log.slice(from).slice(-4000)}`
        )
      }
      await Bun.sleep(20)
    }
  }

  private append(line: string): void {
    this.log += `${line}\n`
    appendLog(`[${this.name}] ${line}\n`, this.logFile)
  }

  private async pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder()
    let partial = ''
    const reader = stream.getReader()
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        partial += decoder.decode(value, { stream: true })
        const lines = partial.split('\n')
        partial = lines.pop()!
        for (const line of lines) this.append(line)
      }
    } catch {
      // the pipe broke with the process; whatever it said is kept
    }
    if (partial) this.append(partial)
  }
}

/** SIGKILLs every child any harness started that still runs (a last resort when a test aborts midway). */
export function killAllChildren(): void {
  for (const child of everyChild) {
    if (child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  }
}

/**
 * Fault injection outside the services: the broker through `rabbitmqctl` (see docs/reliability.md §5.2 for the
 * commands verified on RabbitMQ 3.10.8), the test S3 server through signals, and finding a service's children.
 */

/** Runs a command to completion; throws with its output on a non-zero exit or after `timeoutMs`. */
export async function run(
  argv: string[],
  timeoutMs = 60_000
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = Bun.spawn(argv, { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' })
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  clearTimeout(timer)
  return { code, stdout, stderr }
}

/** `rabbitmqctl <args>`; throws when it fails. */
export async function rabbitmqctl(...args: string[]): Promise<string> {
  const { code, stdout, stderr } = await run(['rabbitmqctl', ...args])
  if (code !== 0)
    throw new Error(`rabbitmqctl ${args.join(' ')} exited with ${code}: ${stderr.trim() || stdout.trim()}`)
  return stdout
}

/**
 * The broker's names (`<local> -> <peer>`, as `rabbitmqctl list_connections name` shows them) for the AMQP
 * connections of process `pid`, found through its sockets.
 */
export async function brokerConnectionsOf(pid: number, port = 5672): Promise<string[]> {
  const { stdout } = await run(['ss', '-Htnp', 'state', 'established', `( dport = :${port} )`], 5_000)
  return stdout
    .split('\n')
    .filter((line) => line.includes(`pid=${pid},`))
    .map((line) => {
      const [, , local, peer] = line.trim().split(/\s+/)
      return `${local} -> ${peer}`
    })
}

/** Closes one client connection on the broker by name (rabbitmqctl wants its Erlang pid). */
export async function closeConnection(name: string): Promise<void> {
  const rows = (await rabbitmqctl('-q', 'list_connections', 'pid', 'name')).split('\n').map((line) => line.split('\t'))
  const row = rows.find(([, n]) => n === name)
  if (!row) throw new Error(`the broker has no connection named ${name}`)
  await rabbitmqctl('close_connection', row[0]!, 'chaos')
}

/**
 * The broker's rows (`pid`, `name`) for the connections whose `connection_name` client property starts with
 * `prefix` (processors name theirs `<type> <system> <host>:<pid>`).
 */
export async function connectionsNamed(prefix: string): Promise<{ pid: string; name: string }[]> {
  // Tab-separated rows: the JSON formatter prints pids in a form close_connection does not take.
  const rows = (await rabbitmqctl('-q', '-s', 'list_connections', 'pid', 'name', 'client_properties')).split('\n')
  return rows
    .filter((row) => row.includes(`{"connection_name","${prefix}`))
    .map((row) => {
      const [pid, name] = row.split('\t')
      return { pid: pid!, name: name! }
    })
}

/** Closes every client connection on the broker (every namespace's, and the test's own). */
export const closeAllConnections = () => rabbitmqctl('close_all_connections', 'chaos')

/** Stops the RabbitMQ application (the Erlang node keeps running, so `startBroker` brings it back). */
export const stopBroker = () => rabbitmqctl('stop_app')

/** Starts the RabbitMQ application and waits until it serves again. */
export async function startBroker(): Promise<void> {
  await rabbitmqctl('start_app')
  await rabbitmqctl('await_startup')
}

/** Sets the memory high watermark (0.0001 raises the memory alarm at once; 0.4 is the default). */
export const setMemoryWatermark = (fraction: number) => rabbitmqctl('set_vm_memory_high_watermark', String(fraction))

/** Sets the broker's delivery acknowledgement timeout (default 1800000); applies to channels opened afterwards. */
export const setConsumerTimeout = (ms: number) =>
  rabbitmqctl('eval', `application:set_env(rabbit, consumer_timeout, ${ms}).`)

/** Whether the broker has a resource alarm in effect (memory or disk): publishing connections are blocked. */
export async function hasAlarm(): Promise<boolean> {
  const { code } = await run(['rabbitmq-diagnostics', '-q', 'check_local_alarms'])
  return code !== 0
}

/** Polls `condition` until it holds; throws `what` after `timeoutMs`. */
export async function until(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
  everyMs = 50
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`)
    await Bun.sleep(everyMs)
  }
}

/** The test S3 server (started by tests/setup.ts) as a process to freeze. */
function s3Pid(): number {
  const pid = Number(process.env.TEST_S3_PID)
  if (!Number.isInteger(pid) || pid <= 0)
    throw new Error('TEST_S3_PID is not set; tests/setup.ts starts the S3 server and sets it')
  return pid
}

/** SIGSTOPs the S3 server: connections are accepted by the kernel, but nothing answers. */
export const freezeS3 = () => process.kill(s3Pid(), 'SIGSTOP')
/** SIGCONTs the S3 server. Harmless when it is not frozen. */
export const thawS3 = () => process.kill(s3Pid(), 'SIGCONT')

/** The pids of `parent`'s direct children named exactly `name` (e.g. the ffmpeg runs of the video processor). */
export async function childrenNamed(parent: number, name: string): Promise<number[]> {
  const { stdout } = await run(['pgrep', '-x', '-P', String(parent), name], 5_000)
  return stdout.split('\n').filter(Boolean).map(Number)
}

/** Whether a process exists (zombies included). */
export function exists(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Sends `signal` to each pid that still exists. */
export function signalAll(pids: Iterable<number>, signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal)
    } catch {
      // gone meanwhile
    }
  }
}

/** The entry of a processor program: read the config, start, stop on SIGTERM/SIGINT; exit codes a supervisor can read. */

/**
 * Exits 2 when the configuration is wrong (`read` throws one error naming every bad variable), 1 when the processor
 * cannot start (RabbitMQ unreachable), and 0 after a clean stop on SIGTERM or SIGINT.
 */
export async function runProcessor<C>(
  name: string,
  read: () => C,
  start: (config: C) => Promise<{ stop(): Promise<void> }>
): Promise<void> {
  let config: C
  try {
    config = read()
  } catch (error) {
    console.error(`${name}: ${(error as Error).message}`)
    process.exit(2)
  }
  let service: { stop(): Promise<void> }
  try {
    service = await start(config)
  } catch (error) {
    console.error(
      `${name}: ${(error as Error).message}\n` +
        '  Start RabbitMQ with `rabbitmq-server -detached` (Debian: `apt-get install rabbitmq-server`), or set RABBITMQ_URL.'
    )
    process.exit(1)
  }
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => void service.stop().then(() => process.exit(0)))
  }
}

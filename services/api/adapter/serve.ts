/**
 * The HTTP server start: the one runtime-specific call in the API and `shared/`. Everything else is Web standards
 * (the Hono app is a `fetch` handler) or `node:` modules that both runtimes provide (`node:sqlite` included).
 * On Deno it is `Deno.serve`, on Bun `Bun.serve`.
 */

export interface ServeOptions {
  port: number
  /**
   * The server's own body cap, on Bun only (its default is 128 MiB, so it is raised to this; Deno.serve takes no such
   * option). Either way MAX_UPLOAD_BYTES is enforced by the app while the body streams (`serverBodyCap`, config.ts).
   */
  maxRequestBodySize: number
  /** Seconds a connection may sit silent, on Bun only (Deno.serve takes no such option; pace.ts cuts slow uploads). */
  idleTimeout: number
}

export interface Server {
  /** The port it listens on (the one the OS picked when asked for 0). */
  port: number
  /** Stops accepting connections and resolves once the requests in flight have finished. */
  stop(): Promise<void>
}

/** The part of Deno's global this file uses (the project type-checks against bun-types only). */
interface DenoServe {
  serve(
    options: { port: number; onListen?: (addr: { port: number }) => void },
    handler: (request: Request) => Response | Promise<Response>
  ): { addr: { port: number }; shutdown(): Promise<void> }
}

export function serve(fetch: (request: Request) => Response | Promise<Response>, options: ServeOptions): Server {
  const deno = (globalThis as { Deno?: DenoServe }).Deno
  if (deno) {
    // onListen replaces Deno's own "Listening on …" line; main.ts says it instead, as on Bun.
    const server = deno.serve({ port: options.port, onListen: () => {} }, fetch)
    return { port: server.addr.port, stop: () => server.shutdown() }
  }
  const server = Bun.serve({
    port: options.port,
    fetch,
    maxRequestBodySize: options.maxRequestBodySize,
    idleTimeout: options.idleTimeout,
  })
  return { port: server.port!, stop: () => server.stop() }
}

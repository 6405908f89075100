/** @module @app/shared: the protocol between backends and processors (schemas, names, topology, codec). */
export * from './names.ts'
export * from './topology.ts'
export * from './messages.ts'
export * from './outputs.ts'
export * from './codec.ts'
export * from './env.ts'
export * from './broker-urls.ts'
export * from './publisher.ts'

/** W3C traceparent: reading what clients send, and continuing or starting a trace. */
import { describe, expect, test } from 'bun:test'
import { childSpan, formatTraceparent, parseTraceparent } from '../../shared/trace.ts'

const VALID = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'

describe('traceparent', () => {
  test('a valid header is read, and written back the same', () => {
    const context = parseTraceparent(VALID)
    expect(context).toEqual({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', flags: 1 })
    expect(formatTraceparent(context!)).toBe(VALID)
    expect(parseTraceparent(` ${VALID} `)).toEqual(context)
  })

  test('malformed, all-zero or forbidden values are ignored (a new trace starts), as the specification asks', () => {
    for (const bad of [
      undefined,
      42,
      '',
      'nonsense',
      VALID.toUpperCase(),
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
      'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      `${VALID}-extra`, // version 00 has exactly four fields
      '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01',
    ]) {
      expect(parseTraceparent(bad)).toBeNull()
    }
  })

  test('a later version is read by its first four fields', () => {
    expect(parseTraceparent(`01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes-later`)).toMatchObject({
      flags: 0,
    })
  })

  test('a child span keeps the trace and its flags, with a new span id; no parent starts a sampled trace', () => {
    const parent = parseTraceparent(VALID)!
    const child = childSpan(parent)
    expect(child.traceId).toBe(parent.traceId)
    expect(child.flags).toBe(1)
    expect(child.spanId).toMatch(/^[0-9a-f]{16}$/)
    expect(child.spanId).not.toBe(parent.spanId)
    const root = childSpan(null)
    expect(root.traceId).toMatch(/^[0-9a-f]{32}$/)
    expect(root.flags).toBe(1)
    expect(parseTraceparent(formatTraceparent(root))).toEqual(root)
    expect(childSpan(null).traceId).not.toBe(root.traceId)
  })
})

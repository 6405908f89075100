/** File names kept as metadata, and the pace rule that cuts slow uploads: pure, no server. */
import { describe, expect, test } from 'bun:test'
import { declaredFilename, sanitizeFilename } from '../../services/api/uploads/filename.ts'
import { paced } from '../../services/api/uploads/pace.ts'

describe('file names', () => {
  test('only the last path segment is kept, without control or bidi characters, NFC, at most 255 characters', () => {
    expect(sanitizeFilename('../../etc/passwd')).toBe('passwd')
    expect(sanitizeFilename('..\\..\\windows\\win.ini')).toBe('win.ini')
    expect(sanitizeFilename('a\u0000b\u0007c\u001b[31m.jpg')).toBe('abc[31m.jpg')
    expect(sanitizeFilename('photo\u202Egpj.exe')).toBe('photogpj.exe')
    expect(sanitizeFilename('cafe\u0301.png')).toBe('café.png')
    expect(sanitizeFilename('..')).toBeNull()
    expect(sanitizeFilename('\u0000\u0001')).toBeNull()
    expect(sanitizeFilename('')).toBeNull()
    const long = '😀'.repeat(5000) // 10 KB of UTF-16
    const kept = sanitizeFilename(long)!
    expect(Array.from(kept)).toHaveLength(255)
    expect(kept).toBe('😀'.repeat(255)) // never cut inside a surrogate pair
  })

  test('Content-Disposition (filename* first) or X-Filename (percent-encoded UTF-8) names a raw upload', () => {
    const named = (headers: Record<string, string>) => declaredFilename(new Headers(headers))
    expect(
      named({ 'content-disposition': `attachment; filename="plain.jpg"; filename*=UTF-8''%C3%A9t%C3%A9.jpg` })
    ).toBe('été.jpg')
    expect(named({ 'content-disposition': 'attachment; filename="../x.png"' })).toBe('x.png')
    expect(named({ 'x-filename': '%E2%80%AEfdp.exe' })).toBe('fdp.exe')
    expect(named({ 'x-filename': 'a%ZZb.jpg' })).toBe('a%ZZb.jpg')
    expect(named({ 'content-disposition': 'garbage;;;=' })).toBeNull()
    expect(named({})).toBeNull()
  })
})

describe('pace', () => {
  /** A body that sends `chunks` then waits `gapMs` before each next one, forever. */
  function dribble(bytes: number, gapMs: number): ReadableStream<Uint8Array> {
    return new ReadableStream({
      async pull(controller) {
        await Bun.sleep(gapMs)
        controller.enqueue(new Uint8Array(bytes))
      },
    })
  }
  async function readAll(stream: ReadableStream<Uint8Array>) {
    const started = performance.now()
    let bytes = 0
    const reader = stream.getReader()
    try {
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) bytes += chunk.value.byteLength
    } catch (error) {
      return {
        error: error as { status: number; code: string; message: string },
        bytes,
        ms: performance.now() - started,
      }
    }
    return { error: null, bytes, ms: performance.now() - started }
  }

  test('a body that goes silent for a window is cut with 408', async () => {
    let sent = false
    const silent = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (!sent) controller.enqueue(new Uint8Array(10))
        sent = true
        return new Promise(() => {}) // never another byte
      },
    })
    const { error, bytes, ms } = await readAll(paced(silent, { windowMs: 300, minBytesPerSecond: 1 }))
    expect(error).toMatchObject({ status: 408, code: 'upload_timeout' })
    expect(error!.message).toContain('no data arrived for 0.3 s')
    expect(bytes).toBe(10)
    expect(ms).toBeLessThan(2000)
  })

  test('a body that dribbles under the minimum rate is cut; one above it passes', async () => {
    const slow = await readAll(paced(dribble(1, 50), { windowMs: 300, minBytesPerSecond: 100 }))
    expect(slow.error).toMatchObject({ status: 408, code: 'upload_timeout' })
    expect(slow.error!.message).toContain('under the minimum of 100 bytes/s')

    let left = 20
    const fine = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (left-- === 0) return controller.close()
        await Bun.sleep(20)
        controller.enqueue(new Uint8Array(1000))
      },
    })
    expect(await readAll(paced(fine, { windowMs: 100, minBytesPerSecond: 1000 }))).toMatchObject({
      error: null,
      bytes: 20_000,
    })
  })
})

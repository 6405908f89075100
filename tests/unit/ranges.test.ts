/** Range requests on an object of known size: what is served (206), what is the whole object (200), what is 416. */
import { expect, test } from 'bun:test'
import { contentRange, requestedRange } from '../../services/api/http/ranges.ts'

test('one range: first-last, first- (to the end), -n (the last n); the last byte is capped at the end', () => {
  expect(requestedRange('bytes=0-99', 1000)).toEqual({ start: 0, end: 99 })
  expect(requestedRange('bytes=500-', 1000)).toEqual({ start: 500, end: 999 })
  expect(requestedRange('bytes=-10', 1000)).toEqual({ start: 990, end: 999 })
  expect(requestedRange('bytes=-5000', 1000)).toEqual({ start: 0, end: 999 })
  expect(requestedRange('bytes=900-5000', 1000)).toEqual({ start: 900, end: 999 })
  expect(requestedRange(' bytes=7-7 ', 1000)).toEqual({ start: 7, end: 7 })
})

test('no header, another unit, several ranges or nonsense: the whole object', () => {
  for (const header of [undefined, '', 'items=0-1', 'bytes=0-1,5-6', 'bytes=-', 'bytes=a-b', 'bytes 0-1'])
    expect(requestedRange(header, 1000)).toBeNull()
})

test('a range past the end, backwards, or of nothing: 416', () => {
  for (const header of ['bytes=1000-', 'bytes=1000-2000', 'bytes=20-10', 'bytes=-0'])
    expect(requestedRange(header, 1000)).toBe('unsatisfiable')
  expect(requestedRange('bytes=-1', 0)).toBe('unsatisfiable')
})

test('Content-Range says the range and the size, or only the size', () => {
  expect(contentRange({ start: 0, end: 99 }, 1000)).toBe('bytes 0-99/1000')
  expect(contentRange(null, 1000)).toBe('bytes */1000')
})

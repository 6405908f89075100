/** Which outputs an image request makes of a source (services/images planImages), apart from any decoding. */
import { expect, test } from 'bun:test'
import type { ImageOutputSpec } from '@app/shared'
import { planImages } from '../../services/images/main.ts'

const set: ImageOutputSpec = { name: 'srcset', format: 'webp', widths: [320, 640, 960, 1280, 1920] }
const names = (source: { width: number; height: number }, specs: ImageOutputSpec[] = [set]) =>
  planImages(specs, source).map((p) => [p.name, p.width])

test('a responsive set makes the widths at or below its source, each named after its width', () => {
  expect(names({ width: 3840, height: 2160 })).toEqual([
    ['srcset-320', 320],
    ['srcset-640', 640],
    ['srcset-960', 960],
    ['srcset-1280', 1280],
    ['srcset-1920', 1920],
  ])
  expect(names({ width: 1000, height: 1000 })).toEqual([
    ['srcset-320', 320],
    ['srcset-640', 640],
    ['srcset-960', 960],
  ])
  expect(names({ width: 640, height: 10 })).toEqual([
    ['srcset-320', 320],
    ['srcset-640', 640],
  ])
})

test('a set is never empty: a source narrower than every width gives one output at its own width, named after the smallest', () => {
  expect(names({ width: 200, height: 100 })).toEqual([['srcset-320', 200]])
  // With enlarge, every width is made.
  expect(names({ width: 200, height: 100 }, [{ ...set, enlarge: true }])).toHaveLength(5)
})

test('a box output is made once, with its box, and knows no set', () => {
  const [avatar] = planImages([{ name: 'avatar', format: 'webp', width: 256, height: 256, fit: 'cover' }], {
    width: 10,
    height: 10,
  })
  expect(avatar).toMatchObject({ name: 'avatar', width: 256, height: 256 })
  expect(avatar!.set).toBeUndefined()
})

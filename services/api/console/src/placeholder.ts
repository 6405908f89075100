/**
 * What a picture looks like before it loads: its ThumbHash (from the media's metadata), drawn as a blurred image
 * behind the <img> until the real one covers it, or its dominant colour where there is no hash. The hash becomes a
 * small PNG in the page (a data: URL; the page's policy allows data: images and nothing else from elsewhere).
 */
import { thumbHashToDataURL } from 'thumbhash'
import type { Media } from './api.ts'

/** Puts the media's placeholder behind `element` (the box an <img> loads into). */
export function showPlaceholder(element: HTMLElement, media: Media): void {
  const metadata = media.metadata as { thumbhash?: string; dominantColor?: string } | null
  if (metadata?.dominantColor) element.style.backgroundColor = metadata.dominantColor
  if (!metadata?.thumbhash) return
  try {
    const bytes = Uint8Array.from(atob(metadata.thumbhash), (c) => c.charCodeAt(0))
    element.style.backgroundImage = `url("${thumbHashToDataURL(bytes)}")`
    element.classList.add('has-placeholder')
  } catch {
    // A hash the library cannot read: the colour (if any) stands in.
  }
}

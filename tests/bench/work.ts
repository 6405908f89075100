/** What the image benchmarks share: their input photos, and the baseline (bare sharp doing the processor's work). */
import sharp from 'sharp'

/** A photo-like JPEG: smooth colour fields plus noise, so it encodes like a real one. */
export async function photo(width: number, height: number): Promise<Uint8Array<ArrayBuffer>> {
  const noise = await sharp({
    create: { width, height, channels: 3, background: '#808080', noise: { type: 'gaussian', mean: 128, sigma: 40 } },
  })
    .blur(2)
    .png()
    .toBuffer()
  return new Uint8Array(await sharp(noise).jpeg({ quality: 90 }).toBuffer())
}

/** What the image processor makes of a photo (auto-orient, thumb and preview as WebP), bare: milliseconds taken. */
export async function bareSharp(bytes: Uint8Array): Promise<number> {
  const started = performance.now()
  const base = sharp(bytes).autoOrient()
  await Promise.all([
    base.clone().resize(1280, 1280, { fit: 'inside', withoutEnlargement: true }).webp({ quality: 80 }).toBuffer(),
    base.clone().resize(320, 320, { fit: 'inside', withoutEnlargement: true }).webp({ quality: 80 }).toBuffer(),
  ])
  return performance.now() - started
}

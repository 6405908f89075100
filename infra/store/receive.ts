/**
 * A request body streamed to a temporary file, never held whole: counted against Content-Length, and hashed only
 * when the client asked for a check (the SHA-256 it signed, or a Content-MD5), natively (Bun.CryptoHasher). The
 * trailer is appended at the end. Any failure (a mismatch, a truncated body, a dropped connection) removes the file,
 * so nothing is left to become an object.
 */
import { removeQuietly } from './objects.ts'
import { UNSIGNED } from './sigv4.ts'
import { S3Error } from './xml.ts'

export const MAX_OBJECT_BYTES = 5 * 1024 ** 3

/** Writes the body to `temp` followed by `trailer(size)` when given; returns the body's size. */
export async function receive(
  request: Request,
  temp: string,
  payloadHash: string,
  trailer: ((size: number) => Uint8Array) | undefined
): Promise<number> {
  const declared = request.headers.get('content-length')
  const length = declared === null ? undefined : Number(declared)
  if (length !== undefined && length > MAX_OBJECT_BYTES)
    throw new S3Error('EntityTooLarge', 400, 'Your proposed upload exceeds the maximum allowed size (5 GiB).', {
      ProposedSize: String(length),
      MaxSizeAllowed: String(MAX_OBJECT_BYTES),
    })
  const md5Header = request.headers.get('content-md5')
  if (md5Header !== null && !/^[A-Za-z0-9+/]{22}==$/.test(md5Header))
    throw new S3Error('InvalidDigest', 400, 'The Content-MD5 you specified was invalid.')
  const sha256 = payloadHash === UNSIGNED ? undefined : new Bun.CryptoHasher('sha256')
  const md5 = md5Header === null ? undefined : new Bun.CryptoHasher('md5')
  const sink = Bun.file(temp).writer({ highWaterMark: 1024 * 1024 })
  let size = 0
  try {
    const reader = request.body?.getReader()
    if (reader)
      for (let read = await next(reader); !read.done; read = await next(reader)) {
        const chunk = read.value
        size += chunk.byteLength
        if (size > MAX_OBJECT_BYTES)
          throw new S3Error('EntityTooLarge', 400, 'Your proposed upload exceeds the maximum allowed size (5 GiB).')
        sha256?.update(chunk)
        md5?.update(chunk)
        sink.write(chunk)
      }
    if (length !== undefined && size !== length)
      throw new S3Error(
        'IncompleteBody',
        400,
        `You did not provide the number of bytes specified by the Content-Length HTTP header (${size} of ${length}).`
      )
    if (sha256) {
      const computed = sha256.digest('hex')
      if (computed !== payloadHash)
        throw new S3Error(
          'XAmzContentSHA256Mismatch',
          400,
          "The provided 'x-amz-content-sha256' header does not match what was computed.",
          { ClientComputedContentSHA256: payloadHash, S3ComputedContentSHA256: computed }
        )
    }
    if (md5 && md5.digest('base64') !== md5Header)
      throw new S3Error('BadDigest', 400, 'The Content-MD5 you specified did not match what we received.')
    if (trailer) sink.write(trailer(size))
    await sink.end()
    return size
  } catch (error) {
    await Promise.resolve(sink.end()).catch(() => {})
    removeQuietly(temp)
    throw error
  }
}

/** The next chunk; a body cut off (the connection closed early) is IncompleteBody, not an internal error. */
async function next(reader: ReadableStreamDefaultReader<Uint8Array>) {
  try {
    return await reader.read()
  } catch {
    throw new S3Error('IncompleteBody', 400, 'The request body ended before its Content-Length: the connection closed.')
  }
}

/**
 * S3's XML answers: escaping, the `<Error>` document with its status, and the tiny reader for the one XML body the
 * store accepts (CompleteMultipartUpload). HEAD answers carry no body, as S3's do.
 */

/** An S3 error: its code, its HTTP status and a message, with the resource it concerns (Key, BucketName, UploadId…). */
export class S3Error extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    readonly detail: Record<string, string> = {},
    readonly headers: Record<string, string> = {}
  ) {
    super(message)
  }
}

/** The errors the store answers, by code, with S3's statuses. */
export const errors = {
  noSuchKey: (key: string) => new S3Error('NoSuchKey', 404, 'The specified key does not exist.', { Key: key }),
  noSuchBucket: (bucket: string) =>
    new S3Error('NoSuchBucket', 404, 'The specified bucket does not exist.', { BucketName: bucket }),
  noSuchUpload: (uploadId: string) =>
    new S3Error(
      'NoSuchUpload',
      404,
      'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
      { UploadId: uploadId }
    ),
  notImplemented: (operation: string) =>
    new S3Error('NotImplemented', 501, `${operation} is not implemented by this store.`, { Operation: operation }),
  malformedXml: (why: string) =>
    new S3Error('MalformedXML', 400, `The XML you provided was not well-formed or did not validate: ${why}.`),
  invalidArgument: (message: string, name?: string, value?: string) =>
    new S3Error(
      'InvalidArgument',
      400,
      message,
      name === undefined ? {} : { ArgumentName: name, ArgumentValue: value ?? '' }
    ),
  accessDenied: (message = 'Access Denied') => new S3Error('AccessDenied', 403, message),
}

/** Escapes text for an XML element; characters XML 1.0 cannot hold become numeric references. */
export function escapeXml(text: string): string {
  return text.replace(/[<>&'"\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, (c) =>
    c === '<' ? '&lt;' : c === '>' ? '&gt;' : c === '&' ? '&amp;' : c === '"' ? '&quot;' : `&#${c.charCodeAt(0)};`
  )
}

/** Reads the text of an XML element, undoing the five entities and numeric references. */
export function unescapeXml(text: string): string {
  return text.replace(/&(lt|gt|amp|quot|apos|#x[0-9a-fA-F]+|#[0-9]+);/g, (_, e: string) =>
    e === 'lt'
      ? '<'
      : e === 'gt'
        ? '>'
        : e === 'amp'
          ? '&'
          : e === 'quot'
            ? '"'
            : e === 'apos'
              ? "'"
              : String.fromCodePoint(e[1] === 'x' ? Number.parseInt(e.slice(2), 16) : Number(e.slice(1)))
  )
}

const XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
const NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'

/** `<name>…</name>` for a value (escaped), or nothing for undefined. */
export function element(name: string, value: string | number | boolean | undefined): string {
  return value === undefined ? '' : `<${name}>${escapeXml(String(value))}</${name}>`
}

/** An S3 XML answer with the given root element (in S3's namespace) and inner XML. */
export function xmlResponse(root: string, inner: string, status = 200): Response {
  return new Response(`${XML_HEAD}<${root} ${NS}>${inner}</${root}>`, {
    status,
    headers: { 'Content-Type': 'application/xml' },
  })
}

/** The answer for an S3Error: the XML document, or only the status (and S3's code in a header) for HEAD. */
export function errorResponse(error: S3Error, requestId: string, head: boolean): Response {
  const headers = { 'Content-Type': 'application/xml', 'x-amz-error-code': error.code, ...error.headers }
  if (head) return new Response(null, { status: error.status, headers })
  const detail = Object.entries(error.detail)
    .map(([name, value]) => element(name, value))
    .join('')
  const body = `${XML_HEAD}<Error>${element('Code', error.code)}${element('Message', error.message)}${detail}${element('RequestId', requestId)}</Error>`
  return new Response(body, { status: error.status, headers })
}

/** The parts a CompleteMultipartUpload body names, in its order; MalformedXML when it is not such a document. */
export function readCompleteBody(xml: string): { partNumber: number; etag: string }[] {
  const root = /<CompleteMultipartUpload(?:\s[^>]*)?>([\s\S]*)<\/CompleteMultipartUpload>\s*$/.exec(
    xml.replace(/^\s*<\?xml[^>]*\?>/, '').trim()
  )
  if (!root) throw errors.malformedXml('the root element is not CompleteMultipartUpload')
  const parts: { partNumber: number; etag: string }[] = []
  const rest = (root[1] ?? '').replace(/<Part>([\s\S]*?)<\/Part>/g, (_, inner: string) => {
    const number = /<PartNumber>\s*([0-9]+)\s*<\/PartNumber>/.exec(inner)
    const etag = /<ETag>([\s\S]*?)<\/ETag>/.exec(inner)
    if (!number || !etag) throw errors.malformedXml('a Part lacks its PartNumber or ETag')
    parts.push({ partNumber: Number(number[1]), etag: unescapeXml(etag[1] ?? '').trim() })
    return ''
  })
  if (rest.trim() !== '') throw errors.malformedXml('unexpected content beside the Part elements')
  if (parts.length === 0) throw errors.malformedXml('no Part elements')
  return parts
}

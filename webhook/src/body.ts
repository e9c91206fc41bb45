// Reading an untrusted request body: content type, size and nesting are checked before JSON.parse
// sees it, so that nothing a client sends can exhaust memory or the stack. Each failure is an
// HttpError with a 4xx status and a message for the JSON error body.

import type { IncomingMessage } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';

export const MAX_BODY_BYTES = 1024 * 1024;
export const MAX_DEPTH = 64;

export class HttpError extends Error {
  override name = 'HttpError';
  status: number;
  /** The connection should be closed after the answer (the body was not read to its end). */
  close: boolean;
  constructor(status: number, message: string, close = false) {
    super(message);
    this.status = status;
    this.close = close;
  }
}

/** Accepts `application/json`, optionally with `charset=utf-8`; anything else is 415. */
export function checkContentType(headers: IncomingMessage['headers']): void {
  const type = headers['content-type'];
  if (type === undefined) throw new HttpError(415, 'Content-Type must be application/json (none given)');
  const [media = '', ...params] = type.split(';');
  if (media.trim().toLowerCase() !== 'application/json') {
    throw new HttpError(
      415,
      `Content-Type must be application/json, not ${JSON.stringify(type.slice(0, 60))}`,
    );
  }
  for (const param of params) {
    const [k = '', v = ''] = param.split('=');
    if (k.trim().toLowerCase() === 'charset' && !/^"?utf-?8"?$/i.test(v.trim())) {
      throw new HttpError(415, 'charset must be utf-8');
    }
  }
  const encoding = headers['content-encoding'];
  if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
    throw new HttpError(415, 'Content-Encoding is not supported');
  }
}

/**
 * The body length the request declares (Content-Length), or undefined when it declares none
 * (chunked HTTP/1.1, h2 without the header). Over `limit`: 413 before a byte is read.
 */
export function declaredLength(
  headers: IncomingMessage['headers'],
  limit = MAX_BODY_BYTES,
): number | undefined {
  const declared = headers['content-length'];
  if (declared === undefined) return undefined;
  const bytes = Number(declared);
  if (!/^\d{1,16}$/.test(declared) || !Number.isSafeInteger(bytes)) {
    throw new HttpError(400, 'Content-Length is not a number', true);
  }
  if (bytes > limit)
    throw new HttpError(413, `body is ${declared} bytes; at most ${limit} are accepted`, true);
  return bytes;
}

/**
 * Reads the whole body, refusing more than `limit` bytes, or more than it declared (413/400), as
 * soon as it is known. Works on HTTP/1.1 and h2 requests alike.
 */
export function readBody(
  req: IncomingMessage | Http2ServerRequest,
  declared?: number,
  limit = MAX_BODY_BYTES,
): Promise<Buffer> {
  const max = Math.min(limit, declared ?? limit);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        cleanup();
        req.pause();
        reject(
          max < limit
            ? new HttpError(400, `body is longer than its Content-Length (${declared})`, true)
            : new HttpError(413, `body is larger than ${limit} bytes`, true),
        );
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = (error: Error) => {
      cleanup();
      reject(new HttpError(400, `could not read the body: ${error.message}`, true));
    };
    const onClose = () => {
      if (req.complete) return;
      cleanup();
      reject(new HttpError(400, 'the request was aborted', true));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/**
 * The deepest nesting of objects and arrays in a JSON text, stopping as soon as it exceeds
 * `max` (brackets inside strings do not count). Runs before JSON.parse, in one pass, without
 * recursion; malformed JSON is left for JSON.parse to reject.
 */
export function nestingExceeds(bytes: Buffer, max = MAX_DEPTH): boolean {
  let depth = 0;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (c === 0x22 /* " */) {
      // Skip the string with native searches for its closing quote (most of a body is strings).
      let end = bytes.indexOf(0x22, i + 1);
      while (end !== -1 && escaped(bytes, end)) end = bytes.indexOf(0x22, end + 1);
      if (end === -1) return false; // unterminated: JSON.parse will say so
      i = end;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > max) return true;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    }
  }
  return false;
}

/** The quote at `at` is escaped when an odd number of backslashes precede it. */
function escaped(bytes: Buffer, at: number): boolean {
  let n = 0;
  for (let j = at - 1; j >= 0 && bytes[j] === 0x5c; j--) n++;
  return n % 2 === 1;
}

/** Parses a JSON body that passed `nestingExceeds`; 400 with the parser's message otherwise. */
export function parseJsonBody(bytes: Buffer, maxDepth = MAX_DEPTH): unknown {
  if (bytes.length === 0) throw new HttpError(400, 'body is empty');
  if (nestingExceeds(bytes, maxDepth)) {
    throw new HttpError(400, `body is nested deeper than ${maxDepth} levels`);
  }
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new HttpError(400, `body is not JSON: ${(error as Error).message.slice(0, 200)}`);
  }
}

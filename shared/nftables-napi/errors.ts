// The error classes of nf_tables failures, defined once for every caller (the daemon's kernel
// edge, its in-memory twin, the nft CLI runner in tests): callers branch on the class, never on
// message text. Pure: importing this never loads the addon.

export type NftErrorClass =
  | 'not-supported'
  | 'no-such-object'
  | 'exists'
  | 'busy'
  | 'permission'
  | 'invalid'
  /** A set or map reached its `size` (the kernel answers ENFILE, "Too many open files in system"). */
  | 'full'
  | 'unknown';

/** A failed run. `nftMessage` is libnftables' error text, verbatim. */
export class NftError extends Error {
  readonly errorClass: NftErrorClass;
  readonly nftMessage: string;

  constructor(nftMessage: string, errorClass: NftErrorClass, note?: string) {
    const text = nftMessage.trim();
    super(note ? `${text} (${note})` : text);
    this.name = 'NftError';
    this.errorClass = errorClass;
    this.nftMessage = nftMessage;
  }
}

const ERRNO_CLASSES: ReadonlyArray<readonly [RegExp, NftErrorClass]> = [
  [/Operation not supported/i, 'not-supported'],
  [/No such file or directory|No such device/i, 'no-such-object'],
  [/File exists/i, 'exists'],
  [/Device or resource busy/i, 'busy'],
  [/Operation not permitted|Permission denied/i, 'permission'],
  [/Invalid argument/i, 'invalid'],
  [/Too many open files in system|No space left on device/i, 'full'],
];

/** The first `Error:` line of a libnftables error text (the whole text if there is none). */
export function firstErrorLine(message: string): string {
  return message.split('\n').find((line) => /\bError:/.test(line)) ?? message;
}

/**
 * Class of a libnftables error text, from its first `Error:` line: the kernel's errno text
 * when there is one (`Could not process rule: File exists`, ...), otherwise a parser or
 * evaluation error (`syntax error`, `datatype mismatch`, ...), which is `invalid`.
 * Does not apply the flowtable rule (see `NftContext.run`).
 */
export function classifyNftError(message: string): NftErrorClass {
  const line = firstErrorLine(message);
  for (const [pattern, errorClass] of ERRNO_CLASSES) {
    if (pattern.test(line)) return errorClass;
  }
  if (/Could not process rule:/.test(line)) return 'unknown';
  if (/\bError:/.test(line)) return 'invalid';
  return 'unknown';
}

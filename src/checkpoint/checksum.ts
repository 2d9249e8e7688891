import { Buffer } from 'node:buffer';
import type { Hash } from 'node:crypto';
import { createRequire } from 'node:module';
import * as zlib from 'node:zlib';
import { CkptError } from '../errors.js';
import type { ChecksumAlgorithm } from '../format/manifest.js';

/** An incremental checksum: `update` in file order, then `digest` once. */
export interface Hasher {
  update(chunk: Uint8Array): void;
  /**
   * crc32 only: continues the checksum over `length` bytes whose own crc32 (from 0) is `crc`, as if they
   * had been passed to `update` (see {@link crc32Combine}); lets another thread hash a piece.
   */
  append?(crc: number, length: number): void;
  /** `<algorithm>:<lowercase hex>` as stored in manifests. */
  digest(): string;
}

type Crc32Fn = (data: Uint8Array, value?: number) => number;

/** A CRC-32 implementation: `fn(data, previous)` continues the checksum `previous` over `data`. */
export interface Crc32Implementation {
  /** `native` (@node-rs/crc32, carry-less multiply folding), `zlib` (node:zlib) or `table` (TypeScript). */
  readonly name: 'native' | 'zlib' | 'table';
  readonly fn: Crc32Fn;
}

let table: Uint32Array | undefined;

/** CRC-32 (zlib polynomial) in plain TypeScript; the fallback where neither faster implementation loads. */
export function tableCrc32(data: Uint8Array, value = 0): number {
  if (table === undefined) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let c = ~value >>> 0;
  for (let i = 0; i < data.length; i++) c = (table[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return ~c >>> 0;
}

const CHECK_INPUT = new TextEncoder().encode('123456789');
const CHECK_VALUE = 0xcbf43926;

/** `fn` if it computes the standard check value (also when continued from a split), else undefined. */
function selfTested(fn: Crc32Fn | undefined): Crc32Fn | undefined {
  try {
    if (fn === undefined || fn(CHECK_INPUT) >>> 0 !== CHECK_VALUE) return undefined;
    return fn(CHECK_INPUT.subarray(4), fn(CHECK_INPUT.subarray(0, 4))) >>> 0 === CHECK_VALUE ? fn : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The CRC-32 implementations this runtime offers, fastest first: the optional dependency @node-rs/crc32
 * (a prebuilt binary folding with PCLMULQDQ / PMULL, ~10 GB/s on the bench machine), Node's zlib.crc32
 * (Node >= 20.15, ~4 GB/s) and the table version (~0.5 GB/s). Each must pass the standard check value
 * before it is offered, so a broken binary can never produce wrong checksums; all three agree bit for bit.
 */
export function crc32Implementations(): readonly Crc32Implementation[] {
  const found: Crc32Implementation[] = [];
  let nativeFn: Crc32Fn | undefined;
  try {
    const mod = createRequire(import.meta.url)('@node-rs/crc32') as { crc32?: (input: Uint8Array, initial?: number) => number };
    const f = mod.crc32;
    if (typeof f === 'function') nativeFn = (data, value = 0) => f(data, value);
  } catch {
    // Not installed, or no binary for this platform: the slower implementations below serve.
  }
  const native = selfTested(nativeFn);
  if (native) found.push({ name: 'native', fn: native });
  const zlibFn = selfTested((zlib as unknown as { crc32?: Crc32Fn }).crc32);
  if (zlibFn) found.push({ name: 'zlib', fn: zlibFn });
  found.push({ name: 'table', fn: tableCrc32 });
  return found;
}

/**
 * The implementation checksums use: the fastest available, or the one named by the environment variable
 * `CKPT_CRC32` (`native`, `zlib` or `table`) when it is available (to rule out a native binary when
 * debugging; every choice gives the same checksums).
 */
function chooseCrc32(): Crc32Implementation {
  const all = crc32Implementations();
  const wanted = typeof process === 'object' ? process.env['CKPT_CRC32'] : undefined;
  return all.find((i) => i.name === wanted) ?? (all[0] as Crc32Implementation);
}

let chosen: Crc32Implementation | undefined;

/**
 * The CRC-32 implementation in use in this process, chosen on first use (so that importing ckpt does not
 * load a native binary a program may never need).
 */
export function crc32Implementation(): Crc32Implementation {
  return (chosen ??= chooseCrc32());
}

/** The CRC-32 polynomial, bit-reversed (zlib's). */
const CRC32_POLY = 0xedb88320;

/**
 * `a · b` modulo the CRC-32 polynomial, both polynomials over GF(2) in the reflected bit order crc32
 * uses (the coefficient of x^0 is bit 31).
 */
function multModP(a: number, b: number): number {
  let product = 0;
  for (let bit = 0x80000000; a !== 0; bit >>>= 1) {
    if ((a & bit) !== 0) {
      product ^= b;
      a ^= bit;
    }
    b = (b & 1) !== 0 ? (b >>> 1) ^ CRC32_POLY : b >>> 1;
  }
  return product >>> 0;
}

/**
 * `X_POW_2K[k]` = x^(2^k) modulo the polynomial, reflected. 64 entries cover every safe-integer length:
 * a length below 2^53 uses k up to 53 + 3.
 */
let X_POW_2K: Uint32Array | undefined;

/** The last length {@link xPow8n} was asked for, and its power: pieces of a file are mostly of one size. */
let lastPower = { length: -1, power: 0 };

/** x^(8 · length) modulo the CRC-32 polynomial: what appending `length` zero bytes multiplies a crc by. */
function xPow8n(length: number): number {
  if (length === lastPower.length) return lastPower.power;
  if (X_POW_2K === undefined) {
    X_POW_2K = new Uint32Array(64);
    X_POW_2K[0] = 0x40000000; // x^1
    for (let k = 1; k < 64; k++) X_POW_2K[k] = multModP(X_POW_2K[k - 1] as number, X_POW_2K[k - 1] as number);
  }
  let p = 0x80000000; // x^0
  // x^(8n) = product of x^(2^(k+3)) over the set bits k of n.
  for (let k = 3, n = length; n > 0; k++, n = Math.floor(n / 2)) {
    if (n % 2 === 1) p = multModP(X_POW_2K[k] as number, p);
  }
  lastPower = { length, power: p };
  return p;
}

/**
 * The crc32 of the concatenation A‖B from `crcA` = crc32(A), `crcB` = crc32(B) and B's length in bytes
 * (any safe integer): crc32 is affine over GF(2), so crc(A‖B) = crc(A) · x^(8·|B|) + crc(B) modulo the
 * polynomial. Lets pieces of a file be hashed on different threads and combined in file order.
 *
 * @example
 * ```ts
 * crc32Combine(crc32(a), crc32(b), b.length) === crc32(concat(a, b)); // true
 * ```
 */
export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  if (lengthB === 0) return crcA >>> 0;
  return (multModP(xPow8n(lengthB), crcA >>> 0) ^ crcB) >>> 0;
}

/** What is used of node:crypto. */
interface NodeCrypto {
  createHash(algorithm: 'sha256'): Hash;
}

let crypto: NodeCrypto | undefined;

/** node:crypto, loaded on first use of sha256 (a worker thread that only needs crc32 never loads it). */
function nodeCrypto(): NodeCrypto {
  return (crypto ??= createRequire(import.meta.url)('node:crypto') as NodeCrypto);
}

/** Creates a {@link Hasher} for `algorithm`. */
export function createHasher(algorithm: ChecksumAlgorithm): Hasher {
  if (algorithm === 'sha256') {
    const h = nodeCrypto().createHash('sha256');
    return {
      update: (chunk) => void h.update(chunk),
      digest: () => `sha256:${h.digest('hex')}`,
    };
  }
  const crc32 = crc32Implementation().fn;
  let value = 0;
  return {
    update: (chunk) => {
      // zlib.crc32 returns 0 instead of the running value for a view of an empty ArrayBuffer.
      if (chunk.byteLength > 0) value = crc32(chunk, value);
    },
    append: (crc, length) => {
      value = crc32Combine(value, crc, length);
    },
    digest: () => `crc32:${(value >>> 0).toString(16).padStart(8, '0')}`,
  };
}

/** The algorithm named by a manifest checksum string (`crc32:…` → `crc32`). */
export function checksumAlgorithm(checksum: string): ChecksumAlgorithm {
  return checksum.startsWith('sha256:') ? 'sha256' : 'crc32';
}

/** The member of manifest.json that holds the manifest's own checksum; always its last member. */
export const MANIFEST_CHECKSUM_KEY = 'manifestChecksum';

const MANIFEST_CHECKSUM_RE = /^(crc32:[0-9a-f]{8}|sha256:[0-9a-f]{64})$/;
const ZERO = 0x30; // '0'

/** Offset and length of the hex digits of the quoted checksum `value` last found in `bytes`, or undefined. */
function locateDigits(bytes: Uint8Array, value: string): { at: number; length: number } | undefined {
  const quoted = Buffer.from(`"${value}"`, 'latin1');
  const at = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).lastIndexOf(quoted);
  if (at < 0) return undefined;
  const colon = value.indexOf(':');
  return { at: at + 2 + colon, length: value.length - colon - 1 };
}

/** The checksum of `bytes` with the digits at `digits` read as zeros. */
function digestWithZeros(bytes: Uint8Array, digits: { at: number; length: number }, algorithm: ChecksumAlgorithm): string {
  const h = createHasher(algorithm);
  h.update(bytes.subarray(0, digits.at));
  h.update(new Uint8Array(digits.length).fill(ZERO));
  h.update(bytes.subarray(digits.at + digits.length));
  return h.digest();
}

/**
 * The bytes of manifest.json for the JSON text `json` of a manifest object (as `JSON.stringify` writes it,
 * ending with `}`): `"manifestChecksum"` is appended as the last member, its value the checksum of the
 * whole file computed with the value's hex digits written as `0`s. Any damage to the file, even to the
 * whitespace, then fails {@link checkManifestChecksum}.
 */
export function sealManifest(json: string, algorithm: ChecksumAlgorithm): Uint8Array {
  const zeros = `${algorithm}:${'0'.repeat(algorithm === 'sha256' ? 64 : 8)}`;
  const body = json.slice(0, json.lastIndexOf('}')).trimEnd();
  const bytes = Buffer.from(`${body},\n  "${MANIFEST_CHECKSUM_KEY}": "${zeros}"\n}\n`, 'utf8');
  const digits = locateDigits(bytes, zeros) as { at: number; length: number };
  const digest = digestWithZeros(bytes, digits, algorithm);
  bytes.write(digest.slice(digest.indexOf(':') + 1), digits.at, 'latin1');
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Checks the self-checksum of a manifest.json: `value` is its parsed `manifestChecksum` member, `bytes`
 * the file. Throws `MANIFEST_INVALID` when the member is missing or malformed, `CHECKSUM_MISMATCH` when
 * the file was altered; both name `path`.
 */
export function checkManifestChecksum(bytes: Uint8Array, value: unknown, path: string): void {
  if (typeof value !== 'string' || !MANIFEST_CHECKSUM_RE.test(value)) {
    throw new CkptError('MANIFEST_INVALID', `${path}: invalid manifest: "${MANIFEST_CHECKSUM_KEY}" must be "crc32:<8 hex>" or "sha256:<64 hex>", got ${JSON.stringify(value) ?? 'nothing'}`, {
      path,
      received: value,
    });
  }
  const digits = locateDigits(bytes, value);
  const digest = digits === undefined ? 'none' : digestWithZeros(bytes, digits, checksumAlgorithm(value));
  if (digest !== value) {
    throw new CkptError('CHECKSUM_MISMATCH', `${path} is corrupt: its checksum ${digest} does not match its "${MANIFEST_CHECKSUM_KEY}" ${value}`, {
      path,
      expected: value,
      received: digest,
    });
  }
}

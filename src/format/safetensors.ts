/**
 * The safetensors format (https://github.com/huggingface/safetensors, README "Format"; docs/FORMAT.md
 * section 4): an 8-byte little-endian header length N, N bytes of UTF-8 JSON starting with `{` (padded
 * with spaces), then the tensor bytes. Encoding is deterministic; decoding trusts nothing in the file and
 * checks every size before it is used.
 *
 * Pure: no I/O. Callers read and write the bytes (whole files with {@link decodeSafetensors} /
 * {@link serializeSafetensors}, or ranges with {@link readHeaderLength} + {@link parseHeader} and the
 * streamable chunks of {@link encodeSafetensors}).
 *
 * @module
 */
import { CkptError } from '../errors.js';
import { type CanonicalEntry, type CanonicalHeader, ascii, scanCanonicalHeader } from './canonical-header.js';
import { DTYPES, type DType, isDType } from '../tensor/dtype.js';
import { MAX_RANK, type Tensor, type TensorMap, validateTensor } from '../tensor/tensor.js';
import { parseJson } from './json.js';

/** Largest header (N, in bytes) accepted or written; the reference implementation's limit. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Most tensors one file may hold (read or written). */
export const MAX_TENSORS = 1_000_000;

/** Bytes of the little-endian u64 header-length prefix. */
export const HEADER_PREFIX_BYTES = 8;

/** The written header is padded with spaces so that the data buffer starts at a multiple of this. */
export const DATA_ALIGNMENT = 8;

/** The reserved header key of the file's string-to-string metadata. */
export const METADATA_KEY = '__metadata__';

/** Where one tensor lies in a safetensors file, as declared by its (validated) header. */
export interface TensorInfo {
  /** Element type. */
  readonly dtype: DType;
  /** Dimensions; `[]` is a scalar (one element). */
  readonly shape: readonly number[];
  /** First byte, relative to the start of the data buffer ({@link SafetensorsIndex.dataOffset}). */
  readonly begin: number;
  /** One past the last byte, relative to the start of the data buffer. */
  readonly end: number;
}

/** The validated header of a safetensors file: everything needed to read any tensor by range. */
export interface SafetensorsIndex {
  /** N: bytes of the JSON header, padding included, excluding the 8-byte prefix. */
  readonly headerLength: number;
  /** Absolute offset of the data buffer: 8 + N. */
  readonly dataOffset: number;
  /** Bytes of the data buffer (the end of the last tensor). */
  readonly dataLength: number;
  /** Total file size: `dataOffset + dataLength`. */
  readonly fileLength: number;
  /** The `__metadata__` map (empty when the header has none). */
  readonly metadata: Readonly<Record<string, string>>;
  /**
   * Tensors in file order: ascending `begin`, and empty tensors before the tensor that starts at their
   * offset. This reads any file front to back, whereas the JSON key order of a header carries no meaning
   * (JavaScript objects do not even keep it for names like "0"). For files ckpt wrote it is the order of
   * the map that was written, up to the relative order of empty tensors at the same offset.
   */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
}

/** A safetensors file ready to be written: the header, then each chunk in order. */
export interface EncodedSafetensors {
  /** The 8-byte length prefix and the space-padded JSON header (a multiple of 8 bytes in total). */
  readonly header: Uint8Array;
  /** The tensors' data views, in map order, not copied. Empty tensors are included (zero bytes). */
  readonly chunks: readonly Uint8Array[];
  /** Total bytes of the file: `header.byteLength` plus every chunk's length. */
  readonly byteLength: number;
}

/** A whole safetensors file decoded in memory. */
export interface DecodedSafetensors {
  /** The validated header. */
  readonly index: SafetensorsIndex;
  /** Tensors in file order; each `data` is a view into the decoded bytes (no copy). */
  readonly tensors: TensorMap;
  /** The `__metadata__` map (same object as `index.metadata`). */
  readonly metadata: Readonly<Record<string, string>>;
}

const utf8Encoder = new TextEncoder();
// fatal: refuse invalid UTF-8 instead of replacing it; ignoreBOM: keep a BOM so it fails the '{' rule.
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const SPACE = 0x20;
const LEFT_BRACE = 0x7b;
// Matches only unpaired surrogates (the u flag makes a valid pair one code point).
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/**
 * Encodes tensors and metadata as a safetensors file without copying tensor data.
 *
 * Layout, chosen so that equal inputs give identical bytes: tensor data in the map's insertion order;
 * the JSON header lists `__metadata__` first (when `metadata` is given, even if empty), then the tensors
 * in the same order, with no insignificant whitespace, padded with spaces so the data starts at a
 * multiple of {@link DATA_ALIGNMENT}. Every dtype of the table is written, including the ones ckpt only
 * reads elsewhere (U16, U32, U64, F8_E4M3, F8_E5M2), so that foreign files round-trip.
 *
 * @param tensors - The tensors, in the order to write them.
 * @param metadata - String-to-string `__metadata__`; omitted from the header when undefined.
 * @returns The header bytes and the data chunks; write `header` then every chunk.
 * @throws {@link CkptError} `INVALID_ARGUMENT` for a bad name (empty, `__metadata__`, unpaired surrogate)
 *   or a non-map argument, `UNKNOWN_DTYPE` / `INVALID_SHAPE` / `SIZE_OVERFLOW` / `TENSOR_SIZE_MISMATCH`
 *   for an invalid tensor, `INVALID_METADATA`, `TOO_MANY_TENSORS`, `HEADER_TOO_LARGE`.
 *
 * @example
 * ```ts
 * const enc = encodeSafetensors(new Map([['w', tensor(new Float32Array(4), [2, 2])]]), { step: '7' });
 * for (const part of [enc.header, ...enc.chunks]) await sink.write(part);
 * ```
 */
export function encodeSafetensors(tensors: TensorMap, metadata?: Readonly<Record<string, string>>): EncodedSafetensors {
  if (!(tensors instanceof Map)) {
    throw new CkptError('INVALID_ARGUMENT', 'encodeSafetensors: tensors must be a Map of name to tensor', {});
  }
  if (tensors.size > MAX_TENSORS) {
    throw new CkptError('TOO_MANY_TENSORS', `cannot write ${tensors.size} tensors in one file: the limit is ${MAX_TENSORS}`, {
      expected: MAX_TENSORS,
      received: tensors.size,
    });
  }
  // ~80 bytes per tensor (a short name, a 1-2 dimensional shape, offsets of 6-10 digits).
  const out = new HeaderWriter(HEADER_PREFIX_BYTES + 2 + tensors.size * 80);
  out.byte(LEFT_BRACE);
  if (metadata !== undefined) {
    out.string(METADATA_KEY);
    out.byte(COLON);
    out.text(encodeMetadata(metadata));
  }
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    checkName(name);
    validateTensor(t, name);
    const end = offset + t.data.byteLength;
    if (!Number.isSafeInteger(end)) {
      throw new CkptError('SIZE_OVERFLOW', `total size overflows at tensor "${name}"`, { tensor: name });
    }
    // "name":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}
    if (chunks.length > 0 || metadata !== undefined) out.byte(COMMA);
    out.string(name);
    out.ascii(ENTRY_START[t.dtype]);
    for (let k = 0; k < t.shape.length; k++) {
      if (k > 0) out.byte(COMMA);
      out.integer(t.shape[k] as number);
    }
    out.ascii(ENTRY_OFFSETS);
    out.integer(offset);
    out.byte(COMMA);
    out.integer(end);
    out.ascii(ENTRY_END);
    chunks.push(t.data);
    offset = end;
  }
  out.byte(RIGHT_BRACE);
  const jsonBytes = out.length - HEADER_PREFIX_BYTES;
  const padded = Math.ceil(jsonBytes / DATA_ALIGNMENT) * DATA_ALIGNMENT;
  if (padded > MAX_HEADER_BYTES) {
    throw new CkptError('HEADER_TOO_LARGE', `the header would take ${padded} bytes: the limit is ${MAX_HEADER_BYTES}`, {
      expected: MAX_HEADER_BYTES,
      received: padded,
    });
  }
  for (let k = jsonBytes; k < padded; k++) out.byte(SPACE);
  const header = out.finish();
  const view = new DataView(header.buffer, header.byteOffset, HEADER_PREFIX_BYTES);
  view.setUint32(0, padded, true);
  view.setUint32(4, 0, true);
  return { header, chunks, byteLength: header.byteLength + offset };
}

/**
 * Encodes tensors and metadata into one contiguous safetensors file (a copy of every tensor). Same
 * layout and errors as {@link encodeSafetensors}, which streams without copying.
 *
 * @example
 * ```ts
 * const bytes = serializeSafetensors(new Map([['w', tensor(new Float32Array([1, 2]), [2])]]));
 * ```
 */
export function serializeSafetensors(tensors: TensorMap, metadata?: Readonly<Record<string, string>>): Uint8Array {
  const enc = encodeSafetensors(tensors, metadata);
  const out = new Uint8Array(enc.byteLength);
  out.set(enc.header, 0);
  let offset = enc.header.byteLength;
  for (const chunk of enc.chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** What follows a tensor's name up to its first dimension, per dtype. */
const ENTRY_START = Object.fromEntries(Object.keys(DTYPES).map((d) => [d, ascii(`:{"dtype":"${d}","shape":[`)])) as Record<DType, Uint8Array>;
const ENTRY_OFFSETS = ascii('],"data_offsets":[');
const ENTRY_END = ascii(']}');
const COLON = 0x3a;
const COMMA = 0x2c;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const RIGHT_BRACE = 0x7d;

/**
 * Builds the header's bytes (after 8 bytes left for the length prefix) in a growing buffer. Writing
 * bytes directly is about twice as fast as building the JSON text and encoding it, which for a file of
 * many small tensors is most of what encoding costs. Plain ASCII strings and integers are written
 * directly; anything else goes through `JSON.stringify` and UTF-8 encoding, so the bytes are those of
 * the JSON text either way.
 */
class HeaderWriter {
  private buf: Uint8Array;
  private n = HEADER_PREFIX_BYTES;

  /** `estimate`: the bytes expected (a good guess saves growing the buffer). */
  constructor(estimate: number) {
    this.buf = new Uint8Array(Math.min(Math.max(estimate, 64), MAX_HEADER_BYTES + HEADER_PREFIX_BYTES));
  }

  get length(): number {
    return this.n;
  }

  private reserve(bytes: number): void {
    if (this.n + bytes > this.buf.length) this.grow(bytes);
  }

  private grow(bytes: number): void {
    const grown = new Uint8Array(Math.max(this.buf.length * 2, this.n + bytes));
    grown.set(this.buf.subarray(0, this.n));
    this.buf = grown;
  }

  byte(c: number): void {
    this.reserve(1);
    this.buf[this.n++] = c;
  }

  ascii(bytes: Uint8Array): void {
    this.reserve(bytes.length);
    const buf = this.buf;
    let n = this.n;
    // A loop: TypedArray#set costs more than copying a few bytes.
    for (let k = 0; k < bytes.length; k++) buf[n++] = bytes[k] as number;
    this.n = n;
  }

  /** JSON text (already encoded as a string) as UTF-8. */
  text(json: string): void {
    const bytes = utf8Encoder.encode(json);
    this.reserve(bytes.length);
    this.buf.set(bytes, this.n);
    this.n += bytes.length;
  }

  /** `s` as a JSON string. */
  string(s: string): void {
    this.reserve(s.length + 2);
    const buf = this.buf;
    let n = this.n;
    buf[n++] = QUOTE;
    for (let k = 0; k < s.length; k++) {
      const c = s.charCodeAt(k);
      // Controls, '"', '\' are escaped and non-ASCII is UTF-8 encoded: the general way.
      if (c < SPACE || c > 0x7e || c === QUOTE || c === BACKSLASH) return this.text(JSON.stringify(s));
      buf[n++] = c;
    }
    buf[n++] = QUOTE;
    this.n = n;
  }

  /** A non-negative safe integer, in decimal (as JSON writes it). */
  integer(v: number): void {
    const digits = String(v);
    this.reserve(digits.length);
    const buf = this.buf;
    let n = this.n;
    for (let k = 0; k < digits.length; k++) buf[n++] = digits.charCodeAt(k);
    this.n = n;
  }

  /** The bytes written, prefix space included, in a buffer of exactly their size. */
  finish(): Uint8Array {
    return this.n === this.buf.length ? this.buf : this.buf.slice(0, this.n);
  }
}

function checkName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new CkptError('INVALID_ARGUMENT', `tensor name must be a non-empty string, got ${JSON.stringify(name)}`, {
      received: name,
    });
  }
  if (name === METADATA_KEY) {
    throw new CkptError('INVALID_ARGUMENT', `"${METADATA_KEY}" is reserved and cannot name a tensor`, { tensor: name });
  }
  // Other implementations (serde_json) refuse the \uD800-style escapes such a name would need.
  if (LONE_SURROGATE.test(name)) {
    throw new CkptError('INVALID_ARGUMENT', `tensor name ${JSON.stringify(name)} contains an unpaired surrogate`, {
      tensor: name,
    });
  }
}

function encodeMetadata(metadata: unknown): string {
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
    throw new CkptError('INVALID_METADATA', 'metadata must be an object of string values', { received: metadata });
  }
  const parts: string[] = [];
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== 'string') {
      throw new CkptError('INVALID_METADATA', `metadata "${key}" must be a string, got ${typeof value}`, {
        received: value,
      });
    }
    if (LONE_SURROGATE.test(key) || LONE_SURROGATE.test(value)) {
      throw new CkptError('INVALID_METADATA', `metadata "${key}" contains an unpaired surrogate`, { received: key });
    }
    parts.push(`${JSON.stringify(key)}:${JSON.stringify(value)}`);
  }
  return `{${parts.join(',')}}`;
}

/**
 * Reads and validates the header length N from the first 8 bytes of a file.
 *
 * @param prefix8 - At least the first 8 bytes of the file (only those are read).
 * @param fileLength - Size of the whole file in bytes.
 * @param path - The file, named in errors.
 * @returns N, with `N <= MAX_HEADER_BYTES` and `8 + N <= fileLength`.
 * @throws {@link CkptError} `FILE_TOO_SMALL` when the file has fewer than 8 bytes, `HEADER_TOO_LARGE`
 *   when N exceeds {@link MAX_HEADER_BYTES} or the file.
 */
export function readHeaderLength(prefix8: Uint8Array, fileLength: number, path: string): number {
  checkFileLength(fileLength, path);
  if (fileLength < HEADER_PREFIX_BYTES || prefix8.byteLength < HEADER_PREFIX_BYTES) {
    const size = Math.min(fileLength, prefix8.byteLength);
    throw new CkptError('FILE_TOO_SMALL', `${path}: ${size} bytes is too small for a safetensors file (at least 8)`, {
      path,
      expected: HEADER_PREFIX_BYTES,
      received: size,
    });
  }
  const view = new DataView(prefix8.buffer, prefix8.byteOffset, HEADER_PREFIX_BYTES);
  const low = view.getUint32(0, true);
  const high = view.getUint32(4, true);
  // Composed from two u32 so that no value at or above 2^53 is ever rounded into range.
  const exact = (BigInt(high) << 32n) | BigInt(low);
  const available = fileLength - HEADER_PREFIX_BYTES;
  if (high >= 2 ** 21 || high * 2 ** 32 + low > Math.min(MAX_HEADER_BYTES, available)) {
    const limit = MAX_HEADER_BYTES < available ? `the ${MAX_HEADER_BYTES}-byte limit` : `the ${available} bytes after the prefix`;
    throw new CkptError('HEADER_TOO_LARGE', `${path}: header length ${exact} exceeds ${limit}`, {
      path,
      expected: Math.min(MAX_HEADER_BYTES, available),
      received: high >= 2 ** 21 ? exact.toString() : high * 2 ** 32 + low,
    });
  }
  return high * 2 ** 32 + low;
}

/**
 * Parses and validates a header: the N bytes after the length prefix. Checks, in this order: sizes,
 * strict UTF-8, `{` first and only spaces after the closing `}`, strict JSON without duplicate keys, the
 * tensor count, `__metadata__`, then each entry (exactly `dtype`, `shape`, `data_offsets`; known dtype;
 * shape; offsets; byte size matching dtype and shape), then that the ranges tile the data buffer from 0
 * with no hole and no overlap, and that the file ends exactly where the last tensor does. Every size is
 * computed within the safe-integer range before anything is allocated from it.
 *
 * @param headerBytes - The N header bytes (without the 8-byte prefix).
 * @param fileLength - Size of the whole file in bytes.
 * @param path - The file, named in every error (with the tensor, where there is one).
 * @returns The validated index, tensors in file order.
 * @throws {@link CkptError} `HEADER_TOO_LARGE`, `HEADER_INVALID_UTF8`, `HEADER_INVALID_JSON`,
 *   `DUPLICATE_KEY`, `TOO_MANY_TENSORS`, `INVALID_METADATA`, `HEADER_INVALID`, `UNKNOWN_DTYPE`,
 *   `INVALID_SHAPE`, `SIZE_OVERFLOW`, `INVALID_OFFSETS`, `TENSOR_SIZE_MISMATCH`, `FILE_LENGTH_MISMATCH`.
 *
 * @example
 * ```ts
 * const n = readHeaderLength(await readRange(file, 0, 8), size, file);
 * const index = parseHeader(await readRange(file, 8, n), size, file);
 * ```
 */
export function parseHeader(headerBytes: Uint8Array, fileLength: number, path: string): SafetensorsIndex {
  checkFileLength(fileLength, path);
  const n = headerBytes.byteLength;
  if (n > MAX_HEADER_BYTES || n > fileLength - HEADER_PREFIX_BYTES) {
    throw new CkptError('HEADER_TOO_LARGE', `${path}: header of ${n} bytes exceeds the file or the ${MAX_HEADER_BYTES}-byte limit`, {
      path,
      expected: Math.min(MAX_HEADER_BYTES, fileLength - HEADER_PREFIX_BYTES),
      received: n,
    });
  }
  const header = parseHeaderJson(headerBytes, path);
  const literals = header.json !== undefined && FRACTION_HINT.test(header.json) ? nonIntegerLiterals(header.json) : undefined;

  const { canonical } = header;
  const tensorNames = canonical === undefined ? header.names : canonical.names;
  if (tensorNames.length > MAX_TENSORS) throw tooManyTensors(tensorNames.length, path);
  const metadata = header.hasMetadata ? checkMetadata(header.metadata, path) : {};

  const infos: TensorInfo[] = [];
  for (let i = 0; i < tensorNames.length; i++) {
    const name = tensorNames[i] as string;
    infos.push(canonical === undefined ? checkEntry(name, header.values[i], path) : checkInfo(name, canonical.entries[i] as CanonicalEntry, path));
    const literal = literals?.get(name);
    if (literal !== undefined) {
      const [field, text] = literal;
      throw new CkptError(
        field === 'shape' ? 'INVALID_SHAPE' : 'INVALID_OFFSETS',
        `${where(name, path)}: ${field} has the number ${text}, which is written with a fraction or an exponent: it must be a plain integer`,
        { path, tensor: name, received: text },
      );
    }
  }

  // In (begin, end) order, empty tensors come before a non-empty one at the same offset, so a valid
  // tiling is exactly: each range begins where the previous one ended. Files written in order (ckpt's
  // and most others) need no sort.
  const order = fileOrder(infos);
  let cursor = 0;
  for (let k = 0; k < infos.length; k++) {
    const i = order === undefined ? k : (order[k] as number);
    const { begin, end } = infos[i] as TensorInfo;
    if (begin !== cursor) {
      const name = tensorNames[i] as string;
      const problem =
        begin > cursor ? `leave a hole of ${begin - cursor} bytes before it (previous data ends at ${cursor})` : `overlap data that ends at ${cursor}`;
      throw new CkptError('INVALID_OFFSETS', `${where(name, path)}: data_offsets [${begin}, ${end}] ${problem}`, {
        path,
        tensor: name,
        expected: cursor,
        received: begin,
      });
    }
    cursor = end;
  }

  const dataOffset = HEADER_PREFIX_BYTES + n;
  const expectedLength = dataOffset + cursor;
  if (fileLength !== expectedLength) {
    throw new CkptError(
      'FILE_LENGTH_MISMATCH',
      `${path}: file is ${fileLength} bytes but its header describes ${expectedLength} (8 + ${n} header + ${cursor} data)`,
      { path, expected: expectedLength, received: fileLength },
    );
  }

  // The fast path's map holds the validated entries themselves (checkInfo returns them): in file order
  // already, it is the index.
  let tensors: Map<string, TensorInfo>;
  if (order === undefined && canonical !== undefined) {
    tensors = canonical.tensors as Map<string, TensorInfo>;
  } else {
    tensors = new Map();
    for (let k = 0; k < infos.length; k++) {
      const i = order === undefined ? k : (order[k] as number);
      tensors.set(tensorNames[i] as string, infos[i] as TensorInfo);
    }
  }
  return { headerLength: n, dataOffset, dataLength: cursor, fileLength, metadata, tensors };
}

/**
 * Decodes a whole safetensors file held in memory: {@link readHeaderLength} and {@link parseHeader}
 * (every check), then views of each tensor's bytes. Nothing is copied: the tensors alias `bytes`, and
 * share their (read-only) shape arrays with the index.
 *
 * @param bytes - The complete file.
 * @param path - The file, named in errors.
 * @returns The index, the tensors (file order) and the metadata.
 * @throws {@link CkptError} Any error of {@link readHeaderLength} or {@link parseHeader}.
 *
 * @example
 * ```ts
 * const { tensors, metadata } = decodeSafetensors(await readFile(file), file);
 * ```
 */
export function decodeSafetensors(bytes: Uint8Array, path: string): DecodedSafetensors {
  const n = readHeaderLength(bytes, bytes.byteLength, path);
  const index = parseHeader(bytes.subarray(HEADER_PREFIX_BYTES, HEADER_PREFIX_BYTES + n), bytes.byteLength, path);
  const tensors: TensorMap = new Map();
  for (const [name, info] of index.tensors) {
    // The shape array is the index's (both read-only): one array per tensor, not two.
    const t: Tensor = {
      dtype: info.dtype,
      shape: info.shape,
      data: new Uint8Array(bytes.buffer, bytes.byteOffset + index.dataOffset + info.begin, info.end - info.begin),
    };
    tensors.set(name, t);
  }
  return { index, tensors, metadata: index.metadata };
}

/** Indices of `infos` sorted by (begin, end, index), or undefined when they already are in that order. */
function fileOrder(infos: readonly TensorInfo[]): number[] | undefined {
  let sorted = true;
  for (let i = 1; i < infos.length && sorted; i++) sorted = compareRanges(infos[i - 1] as TensorInfo, infos[i] as TensorInfo) <= 0;
  if (sorted) return undefined;
  const order = infos.map((_, i) => i);
  return order.sort((a, b) => compareRanges(infos[a] as TensorInfo, infos[b] as TensorInfo) || a - b);
}

function compareRanges(a: TensorInfo, b: TensorInfo): number {
  return a.begin - b.begin || a.end - b.end;
}

function checkFileLength(fileLength: number, path: string): void {
  if (!Number.isSafeInteger(fileLength) || fileLength < 0) {
    throw new CkptError('INVALID_ARGUMENT', `${path}: file length must be a non-negative safe integer, got ${String(fileLength)}`, {
      path,
      received: fileLength,
    });
  }
}

function where(name: string, path: string): string {
  return `tensor ${JSON.stringify(name)} in ${path}`;
}

/** `count` undefined: the parser stopped counting at the limit. */
function tooManyTensors(count: number | undefined, path: string): CkptError {
  const declared = count === undefined ? `more than ${MAX_TENSORS}` : String(count);
  return new CkptError('TOO_MANY_TENSORS', `${path}: header declares ${declared} tensors: the limit is ${MAX_TENSORS}`, {
    path,
    expected: MAX_TENSORS,
    ...(count === undefined ? {} : { received: count }),
  });
}

/**
 * A parsed header: tensor names and their entries in order (as read by the canonical fast path, or the
 * raw JSON values), and the raw `__metadata__` value.
 */
interface HeaderJson {
  /** The header as the fast path read it; undefined when the general parser read it (the rest). */
  readonly canonical: CanonicalHeader | undefined;
  readonly names: string[];
  readonly values: unknown[];
  readonly hasMetadata: boolean;
  readonly metadata: unknown;
  /** The JSON text, when the general parser read it (its numbers still need the literal check). */
  readonly json: string | undefined;
}

function parseHeaderJson(headerBytes: Uint8Array, path: string): HeaderJson {
  let text: string;
  try {
    text = utf8Decoder.decode(headerBytes);
  } catch (e) {
    throw new CkptError('HEADER_INVALID_UTF8', `${path}: header is not valid UTF-8`, { path, cause: e });
  }
  if (headerBytes[0] !== LEFT_BRACE) {
    const found = headerBytes.byteLength === 0 ? 'the header is empty' : `found byte 0x${(headerBytes[0] ?? 0).toString(16).padStart(2, '0')}`;
    throw new CkptError('HEADER_INVALID_JSON', `${path}: header must start with '{', ${found}`, { path });
  }
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === SPACE) end--;
  if (text.charCodeAt(end - 1) !== 0x7d) {
    throw new CkptError('HEADER_INVALID_JSON', `${path}: header must end with '}' followed only by spaces (0x20)`, { path });
  }
  // The member limit (tensors, + 1 for __metadata__ if the text names it anywhere) stops a hostile
  // header while it is parsed, before it is fully built.
  const json = end === text.length ? text : text.slice(0, end);
  // The padding is ASCII: as many bytes as characters.
  const canonical = scanCanonicalHeader(headerBytes.subarray(0, headerBytes.byteLength - (text.length - end)), json, MAX_TENSORS);
  if (canonical !== undefined) {
    const { metadata } = canonical;
    return { canonical, names: [], values: [], hasMetadata: metadata !== undefined, metadata, json: undefined };
  }
  const limit = json.includes(`"${METADATA_KEY}"`) ? MAX_TENSORS + 1 : MAX_TENSORS;
  const value = parseJson(json, path, {
    maxMembers: {
      limit,
      error: (depth) =>
        depth === 1
          ? tooManyTensors(undefined, path)
          : new CkptError('HEADER_INVALID', `${path}: an object in the header has more than ${limit} members`, { path, expected: limit }),
    },
  });
  // The text starts with '{' and parsed, so the value is an object.
  const root = value as Record<string, unknown>;
  const names = Object.keys(root).filter((k) => k !== METADATA_KEY);
  const hasMetadata = Object.hasOwn(root, METADATA_KEY);
  return { canonical: undefined, names, values: names.map((k) => root[k]), hasMetadata, metadata: hasMetadata ? root[METADATA_KEY] : undefined, json };
}

/**
 * A `[` followed, before any `]` or `"`, by `.`, `e` or `E`: an array that may hold a number written with
 * a fraction or an exponent (`2.0`, `1e3`). The reference implementation reads shapes and offsets as
 * unsigned integers and refuses such numbers, while JSON.parse turns `2.0` into 2. A match (rare: a tensor
 * name like "a[1.5]" can also match) sends the header to {@link nonIntegerLiterals}.
 */
const FRACTION_HINT = /\[[^\]"]*[.eE]/;

const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;

/**
 * The number literals written with a fraction or an exponent inside the `shape` or `data_offsets` of a
 * tensor entry of the (valid JSON) header `json`: tensor name -> [field, literal], first one per tensor.
 */
function nonIntegerLiterals(json: string): Map<string, [string, string]> {
  const found = new Map<string, [string, string]>();
  const keys: (string | undefined)[] = []; // the key of each open container, by depth
  let lastString: string | undefined;
  let pendingKey: string | undefined;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      let escaped = false;
      while (json.charCodeAt(j) !== 0x22) {
        if (json.charCodeAt(j) === 0x5c) {
          escaped = true;
          j++;
        }
        j++;
      }
      lastString = escaped ? (JSON.parse(json.slice(i, j + 1)) as string) : json.slice(i + 1, j);
      i = j;
    } else if (c === 0x3a) {
      pendingKey = lastString;
    } else if (c === 0x7b || c === 0x5b) {
      keys.push(pendingKey);
      pendingKey = undefined;
    } else if (c === 0x7d || c === 0x5d) {
      keys.pop();
    } else if (c === 0x2c) {
      pendingKey = undefined;
    } else if (c === 0x2d || isDigit(c)) {
      let j = i + 1;
      while (j < json.length && /[0-9.eE+-]/.test(json[j] as string)) j++;
      const literal = json.slice(i, j);
      // keys: [undefined (root), tensor name, field, (nested array)…]
      const tensor = keys[1];
      const field = keys[2];
      if (/[.eE]/.test(literal) && tensor !== undefined && (field === 'shape' || field === 'data_offsets') && !found.has(tensor)) {
        found.set(tensor, [field, literal]);
      }
      i = j - 1;
    }
  }
  return found;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkMetadata(value: unknown, path: string): Record<string, string> {
  if (!isObject(value)) {
    throw new CkptError('INVALID_METADATA', `${path}: "${METADATA_KEY}" must be an object of strings, got ${jsonType(value)}`, {
      path,
      received: jsonType(value),
    });
  }
  for (const key of Object.keys(value)) {
    const v = value[key];
    if (typeof v !== 'string') {
      throw new CkptError('INVALID_METADATA', `${path}: "${METADATA_KEY}" entry ${JSON.stringify(key)} must be a string, got ${jsonType(v)}`, {
        path,
        received: jsonType(v),
      });
    }
  }
  return value as Record<string, string>;
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

/** Checks that a parsed JSON entry has the members and JSON types of a tensor, then {@link checkInfo}. */
function checkEntry(name: string, value: unknown, path: string): TensorInfo {
  if (!isObject(value)) {
    throw new CkptError('HEADER_INVALID', `${where(name, path)}: entry must be an object with dtype, shape and data_offsets, got ${jsonType(value)}`, {
      path,
      tensor: name,
    });
  }
  let keys = 0;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue; // an enumerable property someone added to Object.prototype
    if (key !== 'dtype' && key !== 'shape' && key !== 'data_offsets') {
      throw new CkptError('HEADER_INVALID', `${where(name, path)}: unexpected key ${JSON.stringify(key)} (only dtype, shape and data_offsets are allowed)`, {
        path,
        tensor: name,
        received: key,
      });
    }
    keys++;
  }
  if (keys !== 3) {
    const missing = ['dtype', 'shape', 'data_offsets'].filter((k) => !Object.hasOwn(value, k));
    throw new CkptError('HEADER_INVALID', `${where(name, path)}: missing ${missing.join(', ')}`, { path, tensor: name });
  }

  const dtype = value['dtype'];
  if (typeof dtype !== 'string') {
    throw new CkptError('HEADER_INVALID', `${where(name, path)}: dtype must be a string, got ${jsonType(dtype)}`, { path, tensor: name });
  }
  checkDtype(name, dtype, path);
  const shape = value['shape'];
  if (!Array.isArray(shape)) {
    throw new CkptError('HEADER_INVALID', `${where(name, path)}: shape must be an array, got ${jsonType(shape)}`, { path, tensor: name });
  }
  // The dimensions' types are checked with their values.
  const bytes = shapeBytes(name, dtype, shape as number[], path);
  const offsets = value['data_offsets'];
  if (!Array.isArray(offsets) || offsets.length !== 2) {
    throw new CkptError('HEADER_INVALID', `${where(name, path)}: data_offsets must be an array [begin, end], got ${JSON.stringify(offsets)}`, {
      path,
      tensor: name,
    });
  }
  const [begin, end] = offsets as unknown[];
  if (!isOffset(begin) || !isOffset(end)) {
    throw new CkptError('INVALID_OFFSETS', `${where(name, path)}: data_offsets ${JSON.stringify(offsets)} must be non-negative integers below 2^53`, {
      path,
      tensor: name,
      received: offsets,
    });
  }
  const info: TensorInfo = { dtype, shape: shape as number[], begin, end };
  checkRange(name, info, bytes, path);
  return info;
}

/**
 * Checks an entry read by the canonical fast path (its fields are of the right JSON types by
 * construction) as {@link checkEntry} checks a parsed one, and returns the entry itself as the info.
 */
function checkInfo(name: string, entry: CanonicalEntry, path: string): TensorInfo {
  const { dtype, shape } = entry;
  checkDtype(name, dtype, path);
  checkRange(name, entry as TensorInfo, shapeBytes(name, dtype, shape, path), path);
  return entry as TensorInfo;
}

function checkDtype(name: string, dtype: string, path: string): asserts dtype is DType {
  if (!isDType(dtype)) {
    throw new CkptError('UNKNOWN_DTYPE', `${where(name, path)}: unknown dtype ${JSON.stringify(dtype)}`, {
      path,
      tensor: name,
      received: dtype,
    });
  }
}

/** Bytes of a `dtype` tensor of `shape`: at most {@link MAX_RANK} non-negative integers, counts below 2^53. */
function shapeBytes(name: string, dtype: DType, shape: readonly number[], path: string): number {
  if (shape.length > MAX_RANK) {
    throw new CkptError('INVALID_SHAPE', `${where(name, path)}: rank ${shape.length} exceeds the limit of ${MAX_RANK}`, {
      path,
      tensor: name,
      expected: MAX_RANK,
      received: shape.length,
    });
  }
  let elements = 1;
  for (const d of shape as unknown[]) {
    // -0 (the text "-0") is refused like the reference implementation's unsigned integers refuse it.
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0 || Object.is(d, -0)) {
      throw new CkptError('INVALID_SHAPE', `${where(name, path)}: invalid dimension ${Object.is(d, -0) ? '-0' : JSON.stringify(d)} in shape (non-negative integers below 2^53 only)`, {
        path,
        tensor: name,
        received: d,
      });
    }
    elements *= d;
    if (!Number.isSafeInteger(elements)) {
      throw new CkptError('SIZE_OVERFLOW', `${where(name, path)}: element count of shape [${shape.join(', ')}] exceeds 2^53`, {
        path,
        tensor: name,
      });
    }
  }
  const bytes = elements * DTYPES[dtype].size;
  if (!Number.isSafeInteger(bytes)) {
    throw new CkptError('SIZE_OVERFLOW', `${where(name, path)}: byte size of ${dtype} [${shape.join(', ')}] exceeds 2^53`, {
      path,
      tensor: name,
    });
  }
  return bytes;
}

/** Offsets in order, covering exactly the tensor's `bytes`. */
function checkRange(name: string, info: TensorInfo, bytes: number, path: string): void {
  const { dtype, shape, begin, end } = info;
  if (begin > end) {
    throw new CkptError('INVALID_OFFSETS', `${where(name, path)}: data_offsets [${begin}, ${end}] are reversed`, {
      path,
      tensor: name,
      received: [begin, end],
    });
  }
  if (end - begin !== bytes) {
    throw new CkptError(
      'TENSOR_SIZE_MISMATCH',
      `${where(name, path)}: data_offsets [${begin}, ${end}] cover ${end - begin} bytes but ${dtype} [${shape.join(', ')}] needs ${bytes}`,
      { path, tensor: name, expected: bytes, received: end - begin },
    );
  }
}

function isOffset(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && !Object.is(v, -0);
}

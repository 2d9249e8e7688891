/**
 * A fast path for reading safetensors headers in the one form nearly every writer produces (ckpt's
 * encoder, the Rust `safetensors` crate behind Python's, HF tools): compact JSON, `__metadata__` an
 * object of strings, each tensor `{"dtype":"…","shape":[…],"data_offsets":[…,…]}` with its members in
 * that order, plain strings and unsigned integers. It builds the entries directly instead of going
 * through `JSON.parse` and the duplicate-key check of `parseJson`, which for a 10,000-tensor header is
 * most of the time a load of many small tensors takes.
 *
 * It decides nothing: anything else at all (whitespace, escapes, another member order, a number with a
 * sign, fraction, exponent or leading zero, a duplicate name, a tensor named like an array index) makes
 * it return undefined, and the caller reads the header with the strict general parser, which finds and
 * reports any problem. Whatever it does return is what the general parser returns for the same text,
 * and the entries go through the same validation.
 *
 * @module
 */

/** One tensor entry as in the JSON: validated by the caller like a parsed one. */
export interface CanonicalEntry {
  readonly dtype: string;
  readonly shape: number[];
  readonly data_offsets: number[];
}

/** A header read by {@link scanCanonicalHeader}: tensors in text order, and the metadata if present. */
export interface CanonicalHeader {
  readonly names: string[];
  readonly entries: CanonicalEntry[];
  readonly metadata: Record<string, string> | undefined;
}

const METADATA_KEY = '__metadata__';
/** Control characters and backslashes: never in the canonical form (escapes, raw controls, tabs, newlines). */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const NOT_PLAIN = /[\u0000-\u001f\\]/;
/** Names JavaScript objects order before all others (array indices): the general parser's order differs. */
const INDEX_LIKE = /^(?:0|[1-9][0-9]*)$/;

/** dtype names, the common ones first. */
const DTYPE_NAMES = ['F32', 'BF16', 'F16', 'I64', 'F64', 'I32', 'U8', 'BOOL', 'I8', 'I16', 'U16', 'U32', 'U64', 'F8_E4M3', 'F8_E5M2'];

const QUOTE = 0x22;
const COMMA = 0x2c;
const ZERO = 0x30;
const NINE = 0x39;
const COLON = 0x3a;
const LEFT_BRACKET = 0x5b;
const RIGHT_BRACKET = 0x5d;
const LEFT_BRACE = 0x7b;
const RIGHT_BRACE = 0x7d;

class Scanner {
  i = 0;
  constructor(private readonly s: string) {}

  at(c: number): boolean {
    if (this.s.charCodeAt(this.i) !== c) return false;
    this.i++;
    return true;
  }

  literal(text: string): boolean {
    if (!this.s.startsWith(text, this.i)) return false;
    this.i += text.length;
    return true;
  }

  /** A string without escapes (the caller ruled out backslashes and controls), or undefined. */
  string(): string | undefined {
    if (this.s.charCodeAt(this.i) !== QUOTE) return undefined;
    const end = this.s.indexOf('"', this.i + 1);
    if (end < 0) return undefined;
    const value = this.s.slice(this.i + 1, end);
    this.i = end + 1;
    return value;
  }

  /** One of `known` (the same string object each time: no allocation), when one is next and quoted. */
  knownString(known: readonly string[]): string | undefined {
    if (this.s.charCodeAt(this.i) !== QUOTE) return undefined;
    for (const k of known) {
      if (this.s.startsWith(k, this.i + 1) && this.s.charCodeAt(this.i + 1 + k.length) === QUOTE) {
        this.i += k.length + 2;
        return k;
      }
    }
    return undefined;
  }

  /** An unsigned integer below 2^53 without leading zeros, or undefined. */
  integer(): number | undefined {
    const start = this.i;
    let c = this.s.charCodeAt(this.i);
    if (c === ZERO) {
      this.i++;
      c = this.s.charCodeAt(this.i);
      return c >= ZERO && c <= NINE ? undefined : 0;
    }
    let v = 0;
    while (c >= ZERO && c <= NINE) {
      v = v * 10 + (c - ZERO);
      c = this.s.charCodeAt(++this.i);
    }
    // Above 2^53 the digits are not exact any more; the general parser reports such numbers.
    return this.i === start || !Number.isSafeInteger(v) ? undefined : v;
  }

  /** `[` integers separated by commas `]`, or undefined. */
  integers(): number[] | undefined {
    if (!this.at(LEFT_BRACKET)) return undefined;
    const out: number[] = [];
    if (this.at(RIGHT_BRACKET)) return out;
    for (;;) {
      const v = this.integer();
      if (v === undefined) return undefined;
      out.push(v);
      if (this.at(RIGHT_BRACKET)) return out;
      if (!this.at(COMMA)) return undefined;
    }
  }
}

/**
 * The header `json` (trailing padding removed) read in its canonical form, or undefined when it is not
 * in that form or has more than `maxEntries` tensors (the general parser then takes over).
 */
export function scanCanonicalHeader(json: string, maxEntries: number): CanonicalHeader | undefined {
  if (NOT_PLAIN.test(json)) return undefined;
  const p = new Scanner(json);
  const names: string[] = [];
  const entries: CanonicalEntry[] = [];
  const seen = new Set<string>();
  let metadata: Record<string, string> | undefined;
  if (!p.at(LEFT_BRACE)) return undefined;
  if (p.at(RIGHT_BRACE)) return p.i === json.length ? { names, entries, metadata } : undefined;
  for (;;) {
    const name = p.string();
    if (name === undefined || !p.at(COLON)) return undefined;
    if (name === METADATA_KEY) {
      if (metadata !== undefined) return undefined;
      metadata = scanMetadata(p, maxEntries);
      if (metadata === undefined) return undefined;
    } else {
      const first = name.charCodeAt(0);
      if (seen.has(name) || (first >= ZERO && first <= NINE && INDEX_LIKE.test(name)) || names.length >= maxEntries) return undefined;
      seen.add(name);
      if (!p.literal('{"dtype":')) return undefined;
      const dtype = p.knownString(DTYPE_NAMES) ?? p.string();
      if (dtype === undefined || !p.literal(',"shape":')) return undefined;
      const shape = p.integers();
      if (shape === undefined || !p.literal(',"data_offsets":')) return undefined;
      const offsets = p.integers();
      if (offsets === undefined || !p.at(RIGHT_BRACE)) return undefined;
      names.push(name);
      entries.push({ dtype, shape, data_offsets: offsets });
    }
    if (p.at(RIGHT_BRACE)) return p.i === json.length ? { names, entries, metadata } : undefined;
    if (!p.at(COMMA)) return undefined;
  }
}

/** `{"key":"value",…}` with distinct plain keys (not `__proto__`), or undefined. */
function scanMetadata(p: Scanner, maxEntries: number): Record<string, string> | undefined {
  if (!p.at(LEFT_BRACE)) return undefined;
  const out: Record<string, string> = {};
  if (p.at(RIGHT_BRACE)) return out;
  let count = 0;
  for (;;) {
    const key = p.string();
    if (key === undefined || key === '__proto__' || Object.hasOwn(out, key) || ++count > maxEntries || !p.at(COLON)) return undefined;
    const value = p.string();
    if (value === undefined) return undefined;
    out[key] = value;
    if (p.at(RIGHT_BRACE)) return out;
    if (!p.at(COMMA)) return undefined;
  }
}

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

/**
 * One tensor entry, its fields as written (of the JSON types the entry needs: a dtype string, an array of
 * integers, two integer offsets). The caller validates them as it validates a parsed entry; the object
 * has the shape of a `TensorInfo`, so a valid one is used as is.
 */
export interface CanonicalEntry {
  readonly dtype: string;
  readonly shape: number[];
  readonly begin: number;
  readonly end: number;
}

/** A header read by {@link scanCanonicalHeader}: its tensors in text order, and the metadata if present. */
export interface CanonicalHeader {
  /** Tensor names, in text order. */
  readonly names: string[];
  /** Their entries, in the same order. */
  readonly entries: CanonicalEntry[];
  /** The same tensors by name (the names are distinct), in the same order. */
  readonly tensors: Map<string, CanonicalEntry>;
  readonly metadata: Record<string, string> | undefined;
}

const METADATA_KEY = '__metadata__';
/** Names JavaScript objects order before all others (array indices): the general parser's order differs. */
const INDEX_LIKE = /^(?:0|[1-9][0-9]*)$/;

/** The bytes of an ASCII text (also what the encoder writes literally). */
export const ascii = (text: string): Uint8Array => Uint8Array.from(text, (c) => c.charCodeAt(0));

/** dtype names, the common ones first, with their bytes. */
const DTYPE_NAMES = ['F32', 'BF16', 'F16', 'I64', 'F64', 'I32', 'U8', 'BOOL', 'I8', 'I16', 'U16', 'U32', 'U64', 'F8_E4M3', 'F8_E5M2'].map(
  (name) => [name, ascii(name)] as const,
);

const QUOTE = 0x22;
const COMMA = 0x2c;
const ZERO = 0x30;
const NINE = 0x39;
const COLON = 0x3a;
const LEFT_BRACKET = 0x5b;
const BACKSLASH = 0x5c;
const RIGHT_BRACKET = 0x5d;
const LEFT_BRACE = 0x7b;
const RIGHT_BRACE = 0x7d;
/** Below this: control characters, never raw in a JSON string. */
const SPACE = 0x20;

const ENTRY_START = ascii('{"dtype":');
const SHAPE_KEY = ascii(',"shape":');
const OFFSETS_KEY = ascii(',"data_offsets":');

/**
 * Reads the header bytes strictly left to right (indexing bytes is several times faster than
 * `charCodeAt` on the decoded text); strings are cut from the text. Each method consumes what it
 * recognises or returns a failure value (false, undefined, -1), and the whole scan gives up. Outside
 * strings only the characters the methods name are accepted, so whitespace, escapes and control
 * characters could only hide in strings, which {@link Scanner.stringEnd} checks.
 */
class Scanner {
  /** Position in the bytes. */
  i = 0;
  /**
   * Bytes minus UTF-16 units before `i`: the text index of byte `i` is `i - shift`. Only strings hold
   * non-ASCII characters here, and {@link Scanner.stringEnd} counts them.
   */
  shift = 0;
  constructor(
    private readonly b: Uint8Array,
    private readonly text: string,
  ) {}

  done(): boolean {
    return this.i === this.b.length;
  }

  at(c: number): boolean {
    if (this.b[this.i] !== c) return false;
    this.i++;
    return true;
  }

  /** Whether the bytes `lit` are at byte `at`. */
  private matches(lit: Uint8Array, at: number): boolean {
    const b = this.b;
    for (let k = 0; k < lit.length; k++) if (b[at + k] !== lit[k]) return false;
    return true;
  }

  /** Whether the bytes `lit` are next (then consumed). */
  literal(lit: Uint8Array): boolean {
    if (!this.matches(lit, this.i)) return false;
    this.i += lit.length;
    return true;
  }

  /**
   * The index of the closing quote of a string starting here, or -1 when none starts here or it holds a
   * backslash (an escape) or a control character: the general parser reads those. Adds the string's
   * non-ASCII characters to {@link Scanner.shift} (the bytes were checked to be UTF-8: a continuation
   * byte adds no UTF-16 unit, a four-byte sequence's lead adds two).
   */
  stringEnd(): number {
    const { b, i } = this;
    if (b[i] !== QUOTE) return -1;
    let shift = this.shift;
    for (let j = i + 1; j < b.length; j++) {
      const c = b[j] as number;
      if (c === QUOTE) {
        this.shift = shift;
        return j;
      }
      if (c === BACKSLASH || c < SPACE) return -1;
      if (c >= 0x80) {
        if (c < 0xc0) shift++;
        else if (c >= 0xf0) shift--;
      }
    }
    return -1;
  }

  /** A plain string (no escapes, no control characters), or undefined. */
  string(): string | undefined {
    const start = this.i + 1 - this.shift;
    const end = this.stringEnd();
    if (end < 0) return undefined;
    this.i = end + 1;
    return this.text.slice(start, end - this.shift);
  }

  /** A dtype name (the same string object each time: no allocation) or any other plain string. */
  dtype(): string | undefined {
    const i = this.i;
    if (this.b[i] === QUOTE) {
      for (const [name, bytes] of DTYPE_NAMES) {
        if (this.b[i + 1 + bytes.length] === QUOTE && this.matches(bytes, i + 1)) {
          this.i = i + bytes.length + 2;
          return name;
        }
      }
    }
    return this.string();
  }

  /** An unsigned integer below 2^53 without leading zeros, or -1. */
  integer(): number {
    const b = this.b;
    let i = this.i;
    let c = b[i] as number;
    if (c === ZERO) {
      this.i = i + 1;
      c = b[i + 1] as number;
      return c >= ZERO && c <= NINE ? -1 : 0;
    }
    const start = i;
    let v = 0;
    while (c >= ZERO && c <= NINE) {
      v = v * 10 + (c - ZERO);
      c = b[++i] as number;
    }
    this.i = i;
    // Above 2^53 the digits are not exact any more; the general parser reports such numbers.
    return i === start || !Number.isSafeInteger(v) ? -1 : v;
  }

  /** `[` integers separated by commas `]`, or undefined. */
  integers(): number[] | undefined {
    if (!this.at(LEFT_BRACKET)) return undefined;
    const out: number[] = [];
    if (this.at(RIGHT_BRACKET)) return out;
    for (;;) {
      const v = this.integer();
      if (v < 0) return undefined;
      out.push(v);
      if (this.at(RIGHT_BRACKET)) return out;
      if (!this.at(COMMA)) return undefined;
    }
  }
}

/**
 * The header read in its canonical form, or undefined when it is not in that form or has more than
 * `maxEntries` tensors (the general parser then takes over).
 *
 * @param bytes - The header's bytes up to its closing brace (trailing padding removed), valid UTF-8.
 * @param text - Their decoding.
 */
export function scanCanonicalHeader(bytes: Uint8Array, text: string, maxEntries: number): CanonicalHeader | undefined {
  const p = new Scanner(bytes, text);
  const names: string[] = [];
  const entries: CanonicalEntry[] = [];
  const tensors = new Map<string, CanonicalEntry>();
  let metadata: Record<string, string> | undefined;
  const header = (): CanonicalHeader | undefined => (p.done() ? { names, entries, tensors, metadata } : undefined);
  if (!p.at(LEFT_BRACE)) return undefined;
  if (p.at(RIGHT_BRACE)) return header();
  for (;;) {
    const name = p.string();
    if (name === undefined || !p.at(COLON)) return undefined;
    if (name === METADATA_KEY) {
      if (metadata !== undefined) return undefined;
      metadata = scanMetadata(p, maxEntries);
      if (metadata === undefined) return undefined;
    } else {
      const first = name.charCodeAt(0);
      if ((first >= ZERO && first <= NINE && INDEX_LIKE.test(name)) || names.length >= maxEntries) return undefined;
      if (!p.literal(ENTRY_START)) return undefined;
      const dtype = p.dtype();
      if (dtype === undefined || !p.literal(SHAPE_KEY)) return undefined;
      const shape = p.integers();
      if (shape === undefined || !p.literal(OFFSETS_KEY) || !p.at(LEFT_BRACKET)) return undefined;
      const begin = p.integer();
      if (begin < 0 || !p.at(COMMA)) return undefined;
      const end = p.integer();
      if (end < 0 || !p.at(RIGHT_BRACKET) || !p.at(RIGHT_BRACE)) return undefined;
      const entry: CanonicalEntry = { dtype, shape, begin, end };
      tensors.set(name, entry);
      if (tensors.size === names.length) return undefined; // a duplicate name
      names.push(name);
      entries.push(entry);
    }
    if (p.at(RIGHT_BRACE)) return header();
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

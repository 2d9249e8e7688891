/**
 * A strict JSON parser (RFC 8259) for text ckpt did not necessarily write: safetensors headers,
 * manifest.json, state.json. It accepts exactly what `JSON.parse` accepts and returns the same values,
 * but it also refuses duplicate keys, bounds nesting depth and object sizes, and reports errors as
 * {@link CkptError}s naming the file and the position.
 *
 * @module
 */
import { CkptError } from '../errors.js';

/** Deepest nesting of arrays and objects {@link parseJson} accepts by default. */
export const MAX_JSON_DEPTH = 64;

/** Largest `maxDepth` {@link parseJson} accepts (its error-reporting parser recurses once per level). */
export const MAX_JSON_DEPTH_LIMIT = 1000;

/** Options of {@link parseJson}. */
export interface ParseJsonOptions {
  /**
   * Deepest nesting of arrays and objects accepted (the root object or array is depth 1), at most
   * {@link MAX_JSON_DEPTH_LIMIT}.
   * @default MAX_JSON_DEPTH (64)
   */
  readonly maxDepth?: number;
  /**
   * Refuses any object with more than `limit` members, before the document is fully built (a hostile
   * 100 MB object of tiny members would otherwise cost seconds and gigabytes): `error(depth)` makes the
   * error to throw, `depth` being 1 for the root object.
   * @default no limit
   */
  readonly maxMembers?: { readonly limit: number; readonly error: (depth: number) => CkptError };
}

/**
 * Parses `text` as one JSON value (RFC 8259: only space, tab, CR and LF as whitespace; no comments, no
 * trailing commas, no BOM). Objects are ordinary objects and arrays ordinary arrays, exactly as from
 * `JSON.parse`; a `"__proto__"` key becomes an own data property, never the object's prototype.
 *
 * @param text - The JSON text.
 * @param path - The file the text comes from; named in messages and set as the error's `path`.
 * @param options - Limits; see {@link ParseJsonOptions}.
 * @returns The parsed value.
 * @throws {@link CkptError} `HEADER_INVALID_JSON` on a syntax error or too deep nesting (with line,
 *   column and UTF-8 byte offset), `DUPLICATE_KEY` when an object repeats a key (the key is in
 *   `received`), the error made by `options.maxMembers`, or `INVALID_ARGUMENT` for bad options.
 *
 * @example
 * ```ts
 * parseJson('{"a": [1, 2]}', 'state.json'); // { a: [1, 2] }
 * parseJson('{"a": 1, "a": 2}', 'state.json'); // throws DUPLICATE_KEY
 * ```
 */
export function parseJson(text: string, path: string, options: ParseJsonOptions = {}): unknown {
  const limits = resolveOptions(options);
  // Fast path: the engine's JSON.parse implements the same grammar natively, several times faster than
  // a JavaScript scanner and with no warm-up, but it keeps the last of duplicate keys. Every key token
  // ends with `"`, optional whitespace and `:`, so counting those sequences bounds the key tokens from
  // above (a string value can only add to the count); when the result has exactly that many object
  // members, no key was dropped. Anything else (a syntax error, a duplicate, too deep, too many members,
  // a rare string like ":x") goes to the character-level parser, which finds and reports the problem.
  const keyTokens = countKeyEnds(text);
  if (limits.maxMembers === undefined || keyTokens <= limits.maxMembers.limit) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return parseJsonReference(text, path, options);
    }
    const members = typeof value === 'object' && value !== null ? countMembers(value, 0, limits.maxDepth) : 0;
    if (members === keyTokens) return value;
  }
  return parseJsonReference(text, path, options);
}

/**
 * The character-level parser behind {@link parseJson}: same results and errors, but it checks every
 * rule as it goes, so it stops at the first problem and knows where it is. Exported for tests.
 *
 * @internal
 */
export function parseJsonReference(text: string, path: string, options: ParseJsonOptions = {}): unknown {
  return new Parser(text, path, resolveOptions(options)).parseDocument();
}

interface Limits {
  readonly maxDepth: number;
  readonly maxMembers: ParseJsonOptions['maxMembers'];
}

function resolveOptions(options: ParseJsonOptions): Limits {
  const maxDepth = options.maxDepth ?? MAX_JSON_DEPTH;
  const problems: string[] = [];
  if (!Number.isSafeInteger(maxDepth) || maxDepth < 1 || maxDepth > MAX_JSON_DEPTH_LIMIT) {
    problems.push(`maxDepth must be an integer from 1 to ${MAX_JSON_DEPTH_LIMIT}, got ${String(maxDepth)}`);
  }
  const limit = options.maxMembers?.limit;
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 0)) {
    problems.push(`maxMembers.limit must be a non-negative integer, got ${String(limit)}`);
  }
  if (problems.length > 0) {
    throw new CkptError('INVALID_ARGUMENT', `parseJson: ${problems.join('; ')}`, { received: options });
  }
  return { maxDepth, maxMembers: options.maxMembers };
}

/** Occurrences of `"`, optional JSON whitespace, then `:` in `text` (an upper bound of its key tokens). */
function countKeyEnds(text: string): number {
  let n = 0;
  for (let i = text.indexOf('"'); i >= 0; i = text.indexOf('"', i + 1)) {
    let j = i + 1;
    let c = text.charCodeAt(j);
    while (c === SPACE || c === TAB || c === LF || c === CR) c = text.charCodeAt(++j);
    if (c === COLON) n++;
  }
  return n;
}

/** Members of every object in `value`, or -1 when it nests deeper than `maxDepth`. */
function countMembers(value: unknown, depth: number, maxDepth: number): number {
  if (depth >= maxDepth) return -1;
  let total = 0;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i];
      if (typeof item !== 'object' || item === null) continue;
      const n = countMembers(item, depth + 1, maxDepth);
      if (n < 0) return -1;
      total += n;
    }
    return total;
  }
  // Object.keys and lookups: several times faster than Object.values or for...in on huge objects.
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj);
  total = keys.length;
  for (let i = 0; i < keys.length; i++) {
    const item = obj[keys[i] as string];
    if (typeof item !== 'object' || item === null) continue;
    const n = countMembers(item, depth + 1, maxDepth);
    if (n < 0) return -1;
    total += n;
  }
  return total;
}

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const QUOTE = 0x22;
const PLUS = 0x2b;
const COMMA = 0x2c;
const MINUS = 0x2d;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;
const COLON = 0x3a;
const UPPER_E = 0x45;
const LBRACKET = 0x5b;
const BACKSLASH = 0x5c;
const RBRACKET = 0x5d;
const LOWER_E = 0x65;
const LBRACE = 0x7b;
const RBRACE = 0x7d;

const ESCAPES: Readonly<Record<string, string>> = {
  '"': '"',
  '\\': '\\',
  '/': '/',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};

class Parser {
  private pos = 0;

  constructor(
    private readonly text: string,
    private readonly path: string,
    private readonly limits: Limits,
  ) {}

  parseDocument(): unknown {
    this.skipWhitespace();
    const value = this.parseValue(0);
    this.skipWhitespace();
    if (this.pos < this.text.length) this.fail('unexpected content after the JSON value');
    return value;
  }

  private parseValue(depth: number): unknown {
    const c = this.text.charCodeAt(this.pos);
    switch (c) {
      case LBRACE:
        return this.parseObject(depth + 1);
      case LBRACKET:
        return this.parseArray(depth + 1);
      case QUOTE:
        return this.parseString();
      case 0x74: // t
        return this.parseLiteral('true', true);
      case 0x66: // f
        return this.parseLiteral('false', false);
      case 0x6e: // n
        return this.parseLiteral('null', null);
      default:
        if (c === MINUS || (c >= ZERO && c <= NINE)) return this.parseNumber();
        return this.fail(Number.isNaN(c) ? 'unexpected end of input' : 'expected a JSON value');
    }
  }

  private parseObject(depth: number): Record<string, unknown> {
    if (depth > this.limits.maxDepth) this.fail(`nesting deeper than ${this.limits.maxDepth} levels`);
    const maxMembers = this.limits.maxMembers;
    const limit = maxMembers?.limit ?? Infinity;
    // Members are collected first and the object is built at the end: an object refused for its size
    // then costs no property insertions, which dominate the cost of building a huge object.
    const keys = new Set<string>();
    const values: unknown[] = [];
    this.pos++; // '{'
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) !== RBRACE) {
      for (;;) {
        if (this.text.charCodeAt(this.pos) !== QUOTE) this.fail('expected a string key');
        const keyPos = this.pos;
        const key = this.parseString();
        if (keys.has(key)) throw this.error('DUPLICATE_KEY', `duplicate key ${JSON.stringify(key)}`, keyPos, key);
        if (maxMembers !== undefined && keys.size >= limit) throw maxMembers.error(depth);
        keys.add(key);
        this.skipWhitespace();
        if (this.text.charCodeAt(this.pos) !== COLON) this.fail("expected ':' after an object key");
        this.pos++;
        this.skipWhitespace();
        values.push(this.parseValue(depth));
        this.skipWhitespace();
        const c = this.text.charCodeAt(this.pos);
        if (c === RBRACE) break;
        if (c !== COMMA) this.fail("expected ',' or '}' in an object");
        this.pos++;
        this.skipWhitespace();
      }
    }
    this.pos++; // '}'
    const obj: Record<string, unknown> = {};
    let i = 0;
    for (const key of keys) {
      const value = values[i++];
      // Assigning "__proto__" would call the Object.prototype setter and replace the prototype.
      if (key === '__proto__') Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
      else obj[key] = value;
    }
    return obj;
  }

  private parseArray(depth: number): unknown[] {
    if (depth > this.limits.maxDepth) this.fail(`nesting deeper than ${this.limits.maxDepth} levels`);
    const arr: unknown[] = [];
    this.pos++; // '['
    this.skipWhitespace();
    if (this.text.charCodeAt(this.pos) === RBRACKET) {
      this.pos++;
      return arr;
    }
    for (;;) {
      arr.push(this.parseValue(depth));
      this.skipWhitespace();
      const c = this.text.charCodeAt(this.pos);
      if (c === COMMA) {
        this.pos++;
        this.skipWhitespace();
      } else if (c === RBRACKET) {
        this.pos++;
        return arr;
      } else {
        this.fail("expected ',' or ']' in an array");
      }
    }
  }

  private parseString(): string {
    const text = this.text;
    const start = ++this.pos; // after '"'
    let i = start;
    // Fast path: no escapes, which is every tensor name and dtype in practice.
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === QUOTE) {
        this.pos = i + 1;
        return text.slice(start, i);
      }
      if (c === BACKSLASH) break;
      if (!(c >= SPACE)) this.badStringChar(i); // also true for NaN: the end of the text
      i++;
    }
    let out = text.slice(start, i);
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === QUOTE) {
        this.pos = i + 1;
        return out;
      }
      if (c === BACKSLASH) {
        const e = text.charAt(i + 1);
        if (e === 'u') {
          let code = 0;
          for (let k = i + 2; k < i + 6; k++) {
            const h = hexValue(text.charCodeAt(k));
            if (h < 0) this.failAt(k, 'invalid \\u escape');
            code = code * 16 + h;
          }
          out += String.fromCharCode(code);
          i += 6;
        } else {
          const decoded = ESCAPES[e];
          if (decoded === undefined) this.failAt(i, 'invalid escape in a string');
          out += decoded;
          i += 2;
        }
        continue;
      }
      if (!(c >= SPACE)) this.badStringChar(i);
      const runStart = i;
      while (i < text.length) {
        const d = text.charCodeAt(i);
        if (d === QUOTE || d === BACKSLASH || d < 0x20) break;
        i++;
      }
      out += text.slice(runStart, i);
    }
  }

  private badStringChar(i: number): never {
    return this.failAt(i, i >= this.text.length ? 'unterminated string' : 'unescaped control character in a string');
  }

  private parseNumber(): number {
    const text = this.text;
    const start = this.pos;
    let i = start;
    const negative = text.charCodeAt(i) === MINUS;
    if (negative) i++;
    const first = text.charCodeAt(i);
    // Integers of at most 15 digits are exact in a double: accumulate them instead of calling Number().
    let value = 0;
    if (first === ZERO) {
      i++;
    } else if (first > ZERO && first <= NINE) {
      for (let c = first; c >= ZERO && c <= NINE; c = text.charCodeAt(++i)) value = value * 10 + (c - ZERO);
    } else {
      this.failAt(i, 'expected a digit');
    }
    const intEnd = i;
    if (text.charCodeAt(i) === DOT) {
      if (!isDigit(text.charCodeAt(i + 1))) this.failAt(i + 1, 'expected a digit after the decimal point');
      i = this.digits(i + 1);
    }
    const e = text.charCodeAt(i);
    if (e === LOWER_E || e === UPPER_E) {
      i++;
      const s = text.charCodeAt(i);
      if (s === PLUS || s === MINUS) i++;
      if (!isDigit(text.charCodeAt(i))) this.failAt(i, 'expected a digit in the exponent');
      i = this.digits(i);
    }
    this.pos = i;
    if (i === intEnd && intEnd - start <= 15) return negative ? -value : value;
    // Number() of a JSON number literal rounds exactly as JSON.parse does.
    return Number(text.slice(start, i));
  }

  private digits(i: number): number {
    while (isDigit(this.text.charCodeAt(i))) i++;
    return i;
  }

  private parseLiteral<T>(word: string, value: T): T {
    if (!this.text.startsWith(word, this.pos)) this.fail('expected a JSON value');
    this.pos += word.length;
    return value;
  }

  private skipWhitespace(): void {
    const text = this.text;
    let i = this.pos;
    for (;;) {
      const c = text.charCodeAt(i);
      if (c !== SPACE && c !== LF && c !== CR && c !== TAB) break;
      i++;
    }
    this.pos = i;
  }

  private fail(message: string): never {
    return this.failAt(this.pos, message);
  }

  private failAt(pos: number, message: string): never {
    throw this.error('HEADER_INVALID_JSON', message, pos);
  }

  private error(code: 'HEADER_INVALID_JSON' | 'DUPLICATE_KEY', message: string, pos: number, key?: string): CkptError {
    const where = describePosition(this.text, Math.min(pos, this.text.length));
    const what = code === 'DUPLICATE_KEY' ? message : `invalid JSON: ${message}`;
    return new CkptError(code, `${this.path}: ${what} at ${where}`, {
      path: this.path,
      ...(key === undefined ? {} : { received: key }),
    });
  }
}

function isDigit(c: number): boolean {
  return c >= ZERO && c <= NINE;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/** "line L, column C (byte B)": 1-based line and column in characters, 0-based UTF-8 byte offset. */
function describePosition(text: string, pos: number): string {
  let line = 1;
  let lineStart = 0;
  let bytes = 0;
  for (let i = 0; i < pos; i++) {
    const c = text.charCodeAt(i);
    if (c === LF) {
      line++;
      lineStart = i + 1;
    }
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < pos && isLowSurrogate(text.charCodeAt(i + 1))) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return `line ${line}, column ${pos - lineStart + 1} (byte ${bytes})`;
}

function isLowSurrogate(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

/**
 * A small parser for JavaScript object/array literals as minifiers write them (unquoted keys,
 * `!0`/`!1` for booleans, `.5` numbers, single- or double-quoted strings). It evaluates nothing:
 * anything that is not a plain literal (calls, identifiers other than true/false/null/undefined,
 * operators) is a parse error. Used to read the model JSON and base64 weights that nsfwjs embeds
 * in its `.min.js` bundles without executing them.
 */

export type JsLiteral = null | undefined | boolean | number | string | JsLiteral[] | { [key: string]: JsLiteral };

export class LiteralSyntaxError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`${message} at offset ${offset}`);
    this.name = 'LiteralSyntaxError';
  }
}

const IDENT_START = /[A-Za-z_$]/;
const IDENT_PART = /[A-Za-z0-9_$]/;
const NUMBER_RE = /[+-]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)/y;

/**
 * Parse one literal starting at `start` (leading whitespace allowed). Returns the value and the
 * offset just after it.
 */
export function parseJsLiteral(src: string, start = 0): { value: JsLiteral; end: number } {
  let pos = start;

  const fail = (msg: string): never => {
    throw new LiteralSyntaxError(msg, pos);
  };
  const skipWs = (): void => {
    while (pos < src.length) {
      const c = src.charCodeAt(pos);
      if (c === 32 || c === 9 || c === 10 || c === 13) pos++;
      else break;
    }
  };
  const expect = (ch: string): void => {
    skipWs();
    if (src[pos] !== ch) fail(`expected '${ch}' but found '${src[pos] ?? 'end of input'}'`);
    pos++;
  };

  const parseString = (): string => {
    const quote = src[pos];
    pos++;
    const close = src.indexOf(quote, pos);
    if (close < 0) fail('unterminated string');
    const slash = src.indexOf('\\', pos);
    if (slash < 0 || slash > close) {
      // Fast path (e.g. multi-megabyte base64 strings): no escapes.
      const s = src.slice(pos, close);
      pos = close + 1;
      return s;
    }
    let out = '';
    while (pos < src.length) {
      const c = src[pos];
      if (c === quote) {
        pos++;
        return out;
      }
      if (c === '\n') fail('newline in string');
      if (c !== '\\') {
        out += c;
        pos++;
        continue;
      }
      const e = src[pos + 1];
      pos += 2;
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '0': out += '\0'; break;
        case 'x': {
          const hex = src.slice(pos, pos + 2);
          if (!/^[0-9a-fA-F]{2}$/.test(hex)) fail('bad \\x escape');
          out += String.fromCharCode(parseInt(hex, 16));
          pos += 2;
          break;
        }
        case 'u': {
          if (src[pos] === '{') {
            const end = src.indexOf('}', pos);
            const hex = src.slice(pos + 1, end);
            if (end < 0 || !/^[0-9a-fA-F]{1,6}$/.test(hex)) fail('bad \\u{} escape');
            out += String.fromCodePoint(parseInt(hex, 16));
            pos = end + 1;
          } else {
            const hex = src.slice(pos, pos + 4);
            if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('bad \\u escape');
            out += String.fromCharCode(parseInt(hex, 16));
            pos += 4;
          }
          break;
        }
        case '\n': break; // line continuation
        case undefined: fail('unterminated string'); break;
        default: out += e;
      }
    }
    return fail('unterminated string');
  };

  const parseIdent = (): string => {
    const s = pos;
    while (pos < src.length && IDENT_PART.test(src[pos])) pos++;
    return src.slice(s, pos);
  };

  const parseNumber = (): number => {
    NUMBER_RE.lastIndex = pos;
    const m = NUMBER_RE.exec(src);
    if (!m) return fail('bad number');
    pos += m[0].length;
    const text = m[0];
    const neg = text.startsWith('-');
    const body = text.replace(/^[+-]/, '');
    const v = /^0[xX]/.test(body) ? parseInt(body.slice(2), 16) : Number(body);
    if (!Number.isFinite(v) && !/^\d/.test(body)) fail('bad number');
    return neg ? -v : v;
  };

  const parseValue = (depth: number): JsLiteral => {
    if (depth > 512) fail('literal nested too deeply');
    skipWs();
    const c = src[pos];
    if (c === '{') return parseObject(depth);
    if (c === '[') return parseArray(depth);
    if (c === '"' || c === "'") return parseString();
    if (c === '!') {
      // Minified booleans: !0 === true, !1 === false.
      const d = src[pos + 1];
      if (d === '0' || d === '1') {
        pos += 2;
        return d === '0';
      }
      return fail("unsupported '!' expression");
    }
    if (c === '-' || c === '+' || c === '.' || (c !== undefined && c >= '0' && c <= '9')) {
      if ((c === '-' || c === '+') && src.startsWith('Infinity', pos + 1)) {
        pos += 9;
        return c === '-' ? -Infinity : Infinity;
      }
      return parseNumber();
    }
    if (c !== undefined && IDENT_START.test(c)) {
      const id = parseIdent();
      switch (id) {
        case 'true': return true;
        case 'false': return false;
        case 'null': return null;
        case 'undefined': return undefined;
        case 'NaN': return NaN;
        case 'Infinity': return Infinity;
        case 'void': {
          skipWs();
          if (src[pos] === '0') {
            pos++;
            return undefined;
          }
          return fail("unsupported 'void' expression");
        }
        default: return fail(`identifier '${id}' is not a literal`);
      }
    }
    return fail(`unexpected '${c ?? 'end of input'}'`);
  };

  const parseArray = (depth: number): JsLiteral[] => {
    pos++; // [
    const out: JsLiteral[] = [];
    skipWs();
    if (src[pos] === ']') {
      pos++;
      return out;
    }
    while (true) {
      out.push(parseValue(depth + 1));
      skipWs();
      if (src[pos] === ',') {
        pos++;
        skipWs();
        if (src[pos] === ']') {
          pos++;
          return out;
        }
        continue;
      }
      expect(']');
      return out;
    }
  };

  const parseObject = (depth: number): { [key: string]: JsLiteral } => {
    pos++; // {
    const out: { [key: string]: JsLiteral } = {};
    skipWs();
    if (src[pos] === '}') {
      pos++;
      return out;
    }
    while (true) {
      skipWs();
      const c = src[pos];
      let key: string;
      if (c === '"' || c === "'") key = parseString();
      else if (c !== undefined && IDENT_START.test(c)) key = parseIdent();
      else if (c !== undefined && ((c >= '0' && c <= '9') || c === '.')) key = String(parseNumber());
      else return fail(`unexpected '${c ?? 'end of input'}' where an object key belongs`);
      expect(':');
      const value = parseValue(depth + 1);
      // Object.defineProperty keeps "__proto__" keys as plain data.
      Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      skipWs();
      if (src[pos] === ',') {
        pos++;
        skipWs();
        if (src[pos] === '}') {
          pos++;
          break;
        }
        continue;
      }
      expect('}');
      break;
    }
    return out;
  };

  const value = parseValue(0);
  return { value, end: pos };
}

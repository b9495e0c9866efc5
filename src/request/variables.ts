// A request's variables as every part of a gateway reads them: one list,
// one value per name, and each value's bytes as the web server sent them.
// The program a request names and the environment it gets are read from the
// same list, so they cannot disagree about which of two values counts.

/**
 * A request variable as the web server sent it: name and value, decoded;
 * `raw`: the value's bytes, when they are not UTF-8 (the value then has
 * U+FFFD for them, for socket's own use; the program gets the bytes).
 */
export type Variable = [name: string, value: string, raw?: Uint8Array];

const strict = new TextDecoder("utf-8", { fatal: true });
const lossy = new TextDecoder();
const encoder = new TextEncoder();

/** A pair's value from the wire: decoded, with its bytes kept when they are not UTF-8. */
export function variable(name: string, bytes: Uint8Array): Variable {
  try {
    return [name, strict.decode(bytes)];
  } catch {
    return [name, lossy.decode(bytes), bytes.slice()];
  }
}

/** A variable's value as bytes: the ones it came as. */
export function bytesOf([, value, raw]: Variable): Uint8Array {
  return raw ?? encoder.encode(value);
}

/**
 * One value per name, the last one sent, where the first sent stood.
 * FastCGI lets PARAMS repeat a name; php-fpm keeps the last, and nginx
 * users rely on it: a `fastcgi_param` after `include fastcgi_params`
 * overrides the included one. (SCGI's spec forbids a repeated name: scgi-header.ts
 * refuses the request instead.)
 */
export function lastValueEach(variables: readonly Variable[]): Variable[] {
  const byName = new Map<string, Variable>();
  for (const v of variables) byName.set(v[0], v);
  return byName.size === variables.length ? [...variables] : [...byName.values()];
}

/** The value of `name` in a list of one value per name. */
export function valueOf(variables: readonly Variable[], name: string): string | undefined {
  return variables.find(([n]) => n === name)?.[1];
}

/**
 * Shared checks for the options objects of the public API.
 *
 * JavaScript callers get no compile-time check of option names, so a misspelled key
 * (`maxGradientEvals` for `maxGradEvals`) would otherwise be ignored silently and the default used.
 * Every public function that takes an options object calls {@link checkKnownKeys} once.
 */
import * as tf from '@tensorflow/tfjs-core';

/** A short, human-readable description of any value, for error messages. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (typeof v === 'function') return 'a function';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (v instanceof tf.Tensor) return `a ${v.dtype} tensor of shape [${v.shape.join(', ')}]`;
  if (typeof v === 'number') return Number.isNaN(v) ? 'NaN' : String(v);
  if (Array.isArray(v)) return v.length > 8 ? `an array of ${v.length} elements` : `[${v.map(describeValue).join(', ')}]`;
  try {
    const s = JSON.stringify(v);
    if (s === undefined) return String(v);
    return s.length > 120 ? `${s.slice(0, 117)}...` : s;
  } catch {
    return String(v);
  }
}

/** Levenshtein distance, case-insensitive (option names are short). */
function editDistance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  const prev = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length];
}

/** The allowed name closest to `key`, or undefined when none is plausibly meant. */
export function closestName(key: string, allowed: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const name of allowed) {
    let d = editDistance(key, name);
    // A prefix/suffix relation ("maxGradientEvals" vs "maxGradEvals") counts as close.
    const lk = key.toLowerCase();
    const ln = name.toLowerCase();
    if (lk.includes(ln) || ln.includes(lk)) d = Math.min(d, Math.abs(key.length - name.length) / 2);
    if (d < bestD) {
      bestD = d;
      best = name;
    }
  }
  if (best === undefined) return undefined;
  return bestD <= Math.max(2, Math.ceil(best.length / 3)) ? best : undefined;
}

/**
 * Throws when `options` is not a plain object (or undefined/null, which count as `{}`), or when it has
 * a key that is not in `allowed`. The error names the function, the unknown key and the closest valid
 * key, e.g. `adversarialCallback: unknown option 'maxGradientEvals' (did you mean 'maxGradEvals'?)`.
 * Keys whose value is `undefined` are still checked: a misspelled key is a mistake whatever its value.
 */
export function checkKnownKeys(options: unknown, allowed: readonly string[], where: string): void {
  if (options == null) return;
  if (typeof options !== 'object' || Array.isArray(options) || options instanceof tf.Tensor) {
    throw new Error(`${where}: options must be an object; got ${describeValue(options)}.`);
  }
  const known = new Set(allowed);
  for (const key of Object.keys(options)) {
    if (known.has(key)) continue;
    const near = closestName(key, allowed);
    const hint = near ? ` (did you mean '${near}'?)` : '';
    throw new Error(`${where}: unknown option '${key}'${hint}. Valid options: ${[...allowed].sort().join(', ')}.`);
  }
}

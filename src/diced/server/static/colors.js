// Distinct, stable colours for labels: a 64-bit label (lo, hi 32-bit halves) is hashed to a
// hue, saturation and value, so neighbouring ids get unrelated colours. Label 0 is background.

function mix32(x) {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

function hsvToRgb(h, s, v) {
  const i = Math.floor(h * 6);
  const f = h * 6 - i;
  const p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s);
  const [r, g, b] = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
  return [Math.round(r * 255), Math.round(g * 255), Math.round(b * 255)];
}

const cache = new Map();

// [r, g, b] for the label with 32-bit halves lo and hi (unsigned numbers).
export function labelColor(lo, hi = 0) {
  if (lo === 0 && hi === 0) return [0, 0, 0];
  const key = hi === 0 ? lo : hi * 4294967296 + lo;
  let rgb = cache.get(key);
  if (rgb === undefined) {
    const h = mix32(lo ^ mix32(hi + 0x9e3779b9));
    const h2 = mix32(h);
    rgb = hsvToRgb(h / 4294967296, 0.55 + 0.4 * ((h2 & 0xffff) / 65535), 0.75 + 0.25 * ((h2 >>> 16) / 65535));
    if (cache.size > 65536) cache.clear();
    cache.set(key, rgb);
  }
  return rgb;
}

// The decimal text of a 64-bit label.
export function labelText(lo, hi = 0) {
  if (hi === 0) return String(lo);
  return ((BigInt(hi) << 32n) | BigInt(lo)).toString();
}

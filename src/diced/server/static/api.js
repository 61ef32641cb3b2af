// The DVID-compatible HTTP API of this server, as the page uses it. Every URL is relative to
// the page, so a server mounted under a path prefix works unchanged.

export class HttpError extends Error {
  constructor(status, message, url) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.url = url;
  }
}

async function check(response, url) {
  if (response.ok) return response;
  let text = "";
  try {
    text = (await response.text()).trim();
  } catch (e) {
    /* body unreadable: keep the status */
  }
  throw new HttpError(response.status, text || `HTTP ${response.status} for ${url}`, url);
}

export async function getJSON(url, { signal } = {}) {
  const response = await check(await fetch(url, { signal }), url);
  return response.json();
}

export async function getBytes(url, { signal } = {}) {
  const response = await check(await fetch(url, { signal }), url);
  return response.arrayBuffer();
}

export const enc = encodeURIComponent;

export function nodeUrl(uuid, name, rest = "") {
  return `api/node/${enc(uuid)}/${enc(name)}/${rest}`;
}

// A 3-D box [x, y, z] of `size` at `offset` (voxel space of `scale`), ZYX order, X fastest.
export function rawUrl(uuid, name, size, offset, scale) {
  const q = scale > 0 ? `?scale=${scale}` : "";
  return nodeUrl(uuid, name, `raw/0_1_2/${size.join("_")}/${offset.join("_")}${q}`);
}

export const reposInfo = () => getJSON("api/repos/info");
export const serverInfo = () => getJSON("api/server/info");
export const viewerConfig = () => getJSON("viewer/config");
export const instanceInfo = (uuid, name, opts) => getJSON(nodeUrl(uuid, name, "info"), opts);
export const instanceKeys = (uuid, name, opts) => getJSON(nodeUrl(uuid, name, "keys"), opts);
// diced extension: the chunk-aligned box of the chunks stored at a version (x, y, z).
export const writtenExtents = (uuid, name, opts) => getJSON(nodeUrl(uuid, name, "written-extents"), opts);

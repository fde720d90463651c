/**
 * One HTTP(S) GET with what downloads need and Node's fetch lacks without extra packages: a proxy
 * from HTTPS_PROXY / HTTP_PROXY / NO_PROXY (absolute-URI requests for http, a CONNECT tunnel for
 * https), redirects, and a stall timeout (no bytes for `stallMs`), with the body as a stream.
 */
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';

export interface GetOptions {
  headers?: Record<string, string>;
  /** Abort when no bytes arrive for this long (connect, headers and body alike). */
  stallMs: number;
  /** Most redirects followed. */
  maxRedirects?: number;
  /** Environment to read proxy settings from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

export interface GetResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The URL that answered, after redirects. */
  url: string;
  body: http.IncomingMessage;
  /** Whether the stall timeout ended the connection (the body then fails with a plain "aborted"). */
  stalled: () => boolean;
}

/** An error a retry may cure (5xx, connection reset, stall); others (404, DNS failure) move on to the next URL. */
export class HttpError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

function envVar(env: NodeJS.ProcessEnv, name: string): string | undefined {
  return env[name.toLowerCase()] || env[name.toUpperCase()] || undefined;
}

/** Whether NO_PROXY exempts a host (entries: "*", "host", ".suffix", "suffix", optionally ":port"). */
export function noProxy(url: URL, env: NodeJS.ProcessEnv = process.env): boolean {
  const list = envVar(env, 'no_proxy');
  if (!list) return false;
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  return list
    .split(/[,\s]+/)
    .filter(Boolean)
    .some((raw) => {
      if (raw === '*') return true;
      const m = /^(.*?)(?::(\d+))?$/.exec(raw.toLowerCase())!;
      const h = m[1].replace(/^\*?\./, '');
      if (m[2] && m[2] !== port) return false;
      return host === h || host.endsWith(`.${h}`);
    });
}

/** The proxy URL for a target, or null. */
export function proxyFor(url: URL, env: NodeJS.ProcessEnv = process.env): URL | null {
  if (noProxy(url, env)) return null;
  const p = url.protocol === 'https:' ? envVar(env, 'https_proxy') : envVar(env, 'http_proxy');
  if (!p) return null;
  return new URL(/^[a-z]+:\/\//i.test(p) ? p : `http://${p}`);
}

function proxyAuth(proxy: URL): Record<string, string> {
  if (!proxy.username) return {};
  const cred = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
  return { 'Proxy-Authorization': `Basic ${Buffer.from(cred).toString('base64')}` };
}

/** A TLS socket to `url` through an HTTP CONNECT tunnel. */
function tunnel(proxy: URL, url: URL, stallMs: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const port = url.port || '443';
    const req = http.request({
      host: proxy.hostname,
      port: proxy.port || 80,
      method: 'CONNECT',
      path: `${url.hostname}:${port}`,
      headers: { Host: `${url.hostname}:${port}`, ...proxyAuth(proxy) },
      timeout: stallMs,
    });
    req.on('timeout', () => req.destroy(new HttpError(`proxy ${proxy.host}: no answer for ${stallMs / 1000} s`, true)));
    req.on('error', (e) => reject(e instanceof HttpError ? e : new HttpError(`proxy ${proxy.host}: ${(e as Error).message}`, true)));
    req.on('connect', (res, socket) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        reject(new HttpError(`proxy ${proxy.host} refused CONNECT ${url.host}: HTTP ${res.statusCode}`, (res.statusCode ?? 0) >= 500, res.statusCode));
        return;
      }
      resolve(tls.connect({ socket, servername: url.hostname }));
    });
    req.end();
  });
}

async function requestOnce(url: URL, opts: GetOptions): Promise<{ res: http.IncomingMessage; stalled: () => boolean }> {
  const env = opts.env ?? process.env;
  const proxy = proxyFor(url, env);
  const headers = { 'User-Agent': 'xfer', ...opts.headers };
  let req: http.ClientRequest;
  if (proxy && url.protocol === 'https:') {
    const socket = await tunnel(proxy, url, opts.stallMs);
    req = https.request(url, { headers, createConnection: () => socket as unknown as import('node:net').Socket });
  } else if (proxy) {
    req = http.request({ host: proxy.hostname, port: proxy.port || 80, path: url.href, headers: { ...headers, Host: url.host, ...proxyAuth(proxy) } });
  } else {
    req = (url.protocol === 'https:' ? https : http).request(url, { headers });
  }
  let stalled = false;
  return new Promise((resolve, reject) => {
    req.setTimeout(opts.stallMs, () => {
      stalled = true;
      req.destroy(new HttpError(`${url.host}: no data for ${opts.stallMs / 1000} s (stalled)`, true));
    });
    req.on('error', (e) => reject(classify(e, url)));
    req.on('response', (res) => {
      // The stall timer keeps watching the body: the socket's idle timeout stays armed while it streams.
      resolve({ res, stalled: () => stalled });
    });
    req.end();
  });
}

/** Turn socket errors into HttpErrors: DNS failures are final for this URL, resets and refusals may be retried. */
function classify(e: unknown, url: URL): HttpError {
  if (e instanceof HttpError) return e;
  const code = (e as NodeJS.ErrnoException).code ?? '';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new HttpError(`cannot resolve ${url.hostname} (${code}): no network or no DNS`, code === 'EAI_AGAIN');
  return new HttpError(`${url.host}: ${(e as Error).message}${code ? ` (${code})` : ''}`, true);
}

/** GET `href`, following redirects; the caller reads (or destroys) the body. Non-2xx answers throw HttpError. */
export async function httpGet(href: string, opts: GetOptions): Promise<GetResponse> {
  let url = new URL(href);
  const max = opts.maxRedirects ?? 10;
  for (let hop = 0; ; hop++) {
    const { res, stalled } = await requestOnce(url, opts);
    const status = res.statusCode ?? 0;
    if (status >= 300 && status < 400 && res.headers.location) {
      res.resume();
      if (hop >= max) throw new HttpError(`${href}: more than ${max} redirects`, false, status);
      url = new URL(res.headers.location, url);
      continue;
    }
    if (status >= 200 && status < 300) return { status, headers: res.headers, url: url.href, body: res, stalled };
    res.resume();
    if (status === 416) return { status, headers: res.headers, url: url.href, body: res, stalled };
    throw new HttpError(`${url.href}: HTTP ${status}${res.statusMessage ? ` ${res.statusMessage}` : ''}`, status >= 500 || status === 429 || status === 408, status);
  }
}

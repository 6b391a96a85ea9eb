// The scheduler's API as the page uses it: JSON calls with the bearer token
// kept in sessionStorage, and a run's server-sent events read with fetch()
// (EventSource cannot send an Authorization header).
const KEY = 'trellis.token';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() { return sessionStorage.getItem(KEY) || ''; }
export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t); else sessionStorage.removeItem(KEY);
}

function headers(extra) {
  const h = Object.assign({ Accept: 'application/json' }, extra || {});
  const t = token();
  if (t) h.Authorization = 'Bearer ' + t;
  return h;
}

async function call(method, path, body, signal) {
  const init = { method, headers: headers(body ? { 'Content-Type': 'application/json' } : null),
                 signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(path, init);
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const e = data && data.error ? data.error : { code: 'http_' + res.status, message: text };
    throw new ApiError(res.status, e.code, e.message || ('HTTP ' + res.status));
  }
  return data;
}

export const get = (path, signal) => call('GET', path, undefined, signal);
// A text answer (a pipeline's source).
export async function getText(path, signal) {
  const res = await fetch(path, { headers: headers({ Accept: 'text/plain' }), signal });
  const text = await res.text();
  if (!res.ok) {
    let e = { code: 'http_' + res.status, message: text };
    try { e = JSON.parse(text).error || e; } catch { /* not JSON */ }
    throw new ApiError(res.status, e.code, e.message);
  }
  return text;
}
export const post = (path, body) => call('POST', path, body);

// Reads GET path as server-sent events, calling onEvent(type, data, id) for
// each; resolves when the stream ends ('end'), or with 'missing' when the
// scheduler has no such route (404), so that the caller can poll instead.
// Resumes from the last id seen when the connection drops.
export async function streamEvents(path, onEvent, signal) {
  let lastId = null;
  for (let tries = 0; tries < 20 && !signal.aborted; tries++) {
    const h = headers({ Accept: 'text/event-stream' });
    if (lastId !== null) h['Last-Event-ID'] = lastId;
    let res;
    try {
      res = await fetch(path, { headers: h, signal, cache: 'no-store' });
    } catch (e) {
      if (signal.aborted) return 'aborted';
      await new Promise(r => setTimeout(r, 1000));
      continue;
    }
    if (res.status === 404 || res.status === 405) return 'missing';
    if (!res.ok) throw new ApiError(res.status, 'http_' + res.status, 'events: HTTP ' + res.status);
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '', ended = false;
    let ev = { type: 'message', data: [], id: null };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          let line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.endsWith('\r')) line = line.slice(0, -1);
          if (line === '') {
            if (ev.data.length) {
              if (ev.id !== null) lastId = ev.id;
              let data = null;
              try { data = JSON.parse(ev.data.join('\n')); } catch { data = ev.data.join('\n'); }
              onEvent(ev.type, data, ev.id);
              if (ev.type === 'run' && data && ['succeeded', 'failed', 'cancelled']
                  .includes(data.state)) ended = true;
            }
            ev = { type: 'message', data: [], id: null };
            continue;
          }
          if (line.startsWith(':')) continue;
          const c = line.indexOf(':');
          const field = c < 0 ? line : line.slice(0, c);
          let val = c < 0 ? '' : line.slice(c + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'event') ev.type = val;
          else if (field === 'data') ev.data.push(val);
          else if (field === 'id') ev.id = val;
        }
      }
    } catch (e) {
      if (signal.aborted) return 'aborted';
    }
    if (ended) return 'end';
    await new Promise(r => setTimeout(r, 500));
  }
  return signal.aborted ? 'aborted' : 'gave_up';
}

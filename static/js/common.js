/* humanlm: helpers shared by the page scripts (play.js, study.js, host.js, student.js).
 * Plain ES2020, no build step: a classic script loaded before the page script, defining one
 * global, window.humanlm. Token texts always go through textContent, never innerHTML.
 */
'use strict';

window.humanlm = (() => {
  // ---------------------------------------------------------------- DOM and tokens

  /** A new element with an optional class and text (set as textContent). */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  /**
   * Fill `node` with a visible rendering of a token: spaces become a faint ␣, newlines ↵ and
   * tabs ⇥, so " over" and "over" look different. Screen readers hear "space" instead of the
   * symbol. With `describe`, a non-empty token also gets node.title = describe(text).
   */
  function renderTokenText(node, text, describe) {
    const t = String(text ?? '');
    node.textContent = '';
    node.dataset.text = t;
    node.classList.toggle('is-ws', /^\s+$/.test(t));
    if (t === '') {
      node.appendChild(el('span', 'ws', '∅'));
      return node;
    }
    let buf = '';
    const flush = () => {
      if (buf) node.appendChild(document.createTextNode(buf));
      buf = '';
    };
    const mark = (symbol, spoken) => {
      flush();
      const m = el('span', 'ws', symbol);
      m.setAttribute('aria-hidden', 'true');
      node.append(m, el('span', 'sr-only', spoken));
    };
    for (const ch of t) {
      if (ch === ' ' || ch === '\u00a0') mark('␣', 'space ');
      else if (ch === '\n') mark('↵', ' newline ');
      else if (ch === '\t') mark('⇥', ' tab ');
      else if (ch !== '\r') buf += ch;
    }
    flush();
    if (describe) node.title = describe(t);
    return node;
  }

  /** A token chip: <span class="chip [extraClass]"> holding renderTokenText(text). */
  function chip(text, extraClass, describe) {
    return renderTokenText(el('span', `chip${extraClass ? ` ${extraClass}` : ''}`), text, describe);
  }

  /** The text of a token given as {text, ...} or as a plain value ('' for null/undefined). */
  function tokenText(t) {
    if (t === null || t === undefined) return '';
    return typeof t === 'object' ? String(t.text ?? '') : String(t);
  }

  // ---------------------------------------------------------------- numbers and text

  /** A probability (0..1) as a readable percentage. */
  function pct(p) {
    if (p === null || p === undefined || Number.isNaN(Number(p))) return '–';
    const v = Number(p) * 100;
    if (v >= 99.95 && v < 100) return '>99.9%';
    if (v >= 10) return `${Math.round(v)}%`;
    if (v >= 1) return `${v.toFixed(1)}%`;
    if (v >= 0.1) return `${v.toFixed(2)}%`;
    if (v >= 0.001) return `${Number(v.toPrecision(2))}%`;
    if (v > 0) return '<0.001%';
    return '0%';
  }

  /** A share (0..1) as a whole percentage, '–' when unknown. */
  const wholePct = (x) => (x === null || x === undefined ? '–' : `${Math.round(Number(x) * 100)}%`);

  /** The text with its first letter in upper case. */
  const capital = (s) => { const t = String(s || ''); return t.charAt(0).toUpperCase() + t.slice(1); };

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---------------------------------------------------------------- JSON API (play, study)

  /** status 0 and network true: the request never got an answer (retrying may help). */
  class ApiError extends Error {
    constructor(message, { status = 0, network = false, data = null } = {}) {
      super(message);
      this.status = status;
      this.network = network;
      this.data = data;
    }
  }

  /**
   * fetch() a JSON endpoint and return the decoded object; anything else throws an ApiError
   * (an AbortError from `signal` is rethrown as it is). `csrfToken` goes in X-CSRFToken on
   * requests with a body; `networkMessage` is the error when the server cannot be reached.
   */
  async function api(method, url, body, {
    signal,
    csrfToken,
    networkMessage = 'Could not reach the server. Check your connection and try again.',
  } = {}) {
    const headers = body === undefined
      ? { Accept: 'application/json' }
      : { 'Content-Type': 'application/json', Accept: 'application/json' };
    if (body !== undefined && csrfToken !== undefined) headers['X-CSRFToken'] = csrfToken;
    let res;
    try {
      res = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
        signal,
      });
    } catch (err) {
      if (err && err.name === 'AbortError') throw err;
      throw new ApiError(networkMessage, { network: true });
    }
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    if (!res.ok) {
      const msg = data && typeof data.error === 'string' && data.error
        ? data.error
        : `The server answered with an error (HTTP ${res.status}).`;
      throw new ApiError(msg, { status: res.status, data });
    }
    if (data === null || typeof data !== 'object') {
      throw new ApiError('The server sent a response this page could not read.', { status: res.status });
    }
    return data;
  }

  // ---------------------------------------------------------------- rooms (host, student)

  /** Show the `.screen` inside `root` whose data-for is `name` and hide the others. */
  function showScreen(root, name) {
    root.dataset.screen = name;
    root.setAttribute('aria-busy', name === 'connecting' ? 'true' : 'false');
    root.querySelectorAll('.screen').forEach((s) => {
      s.hidden = s.dataset.for !== name;
    });
  }

  /**
   * socket.emit with an acknowledgement, as a promise that always resolves: the server's reply
   * object, or {ok: false, error, network: true} when no answer came within `timeoutMs`.
   * While (re)connecting, Socket.IO buffers the emit and sends it on connect; the timeout still
   * bounds the wait, so a click before the connection is up just takes a moment.
   */
  function emitWithAck(socket, event, payload, timeoutMs, timeoutError) {
    return new Promise((resolve) => {
      socket.timeout(timeoutMs).emit(event, payload, (err, resp) => {
        if (err) resolve({ ok: false, error: timeoutError, network: true });
        else resolve(resp && typeof resp === 'object' ? resp : { ok: false, error: 'The server sent an empty answer.' });
      });
    });
  }

  /**
   * A toast(message) function for the box `box` (its text in `messageNode`, closed by
   * `closeButton`), which hides itself after `hideAfterMs`. The same message twice within 2 s
   * shows once: the server sends both a failed ack and a room_error for the same mistake.
   */
  function createToast(box, messageNode, closeButton, hideAfterMs) {
    let last = { text: '', at: 0 };
    let timer = 0;
    closeButton.addEventListener('click', () => { box.hidden = true; });
    return function toast(message) {
      const text = String(message || 'Something went wrong.');
      const now = Date.now();
      if (last.text === text && now - last.at < 2000) return;
      last = { text, at: now };
      messageNode.textContent = capital(text);
      box.hidden = false;
      clearTimeout(timer);
      timer = setTimeout(() => { box.hidden = true; }, hideAfterMs);
    };
  }

  /**
   * A round countdown shown as m:ss in `node`: start(deadline in ms since the epoch) shows it
   * and updates it 4 times a second until 0:00 (it then stays on screen); stop() hides it.
   */
  function createCountdown(node) {
    let timer = 0;
    let deadline = NaN;
    const stopTicking = () => {
      clearInterval(timer);
      timer = 0;
    };
    return {
      /** Whether it is still counting down (false once it reached 0:00 or was stopped). */
      get running() { return timer !== 0; },
      get deadline() { return deadline; },
      stop() {
        stopTicking();
        node.hidden = true;
      },
      start(at) {
        this.stop();
        deadline = at;
        const update = () => {
          const left = Math.max(0, Math.ceil((at - Date.now()) / 1000));
          node.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}`;
          node.classList.toggle('countdown--urgent', left <= 5);
          node.setAttribute('aria-label', `${left} seconds left`);
          if (left === 0) stopTicking();
        };
        node.hidden = false;
        update();
        timer = setInterval(update, 250);
      },
    };
  }

  return Object.freeze({
    el, renderTokenText, chip, tokenText,
    pct, wholePct, capital, sleep,
    ApiError, api,
    showScreen, emitWithAck, createToast, createCountdown,
  });
})();

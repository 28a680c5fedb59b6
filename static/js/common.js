/* humanlm: helpers shared by the page scripts (play.js, study.js, host.js, student.js).
 * Plain ES2020, no build step: a classic script loaded before the page script, defining one
 * global, window.humanlm. Token texts always go through textContent, never innerHTML.
 * The server's limits arrive as JSON in <script type="application/json" id="humanlm-config">
 * (templates/base.html), never as inline script code.
 */
'use strict';

window.humanlm = (() => {
  // ---------------------------------------------------------------- settings from the server

  /** The page's settings from base.html: {limits: {max_guess_chars, max_nickname_chars, max_rounds}}. */
  function readConfig() {
    const node = document.getElementById('humanlm-config');
    if (!node) return {};
    try {
      const data = JSON.parse(node.textContent || '{}');
      return data && typeof data === 'object' ? data : {};
    } catch (_) {
      return {};
    }
  }
  const config = readConfig();
  const limits = Object.freeze({ ...(config.limits || {}) });

  /** A new random idempotency key for one answer (a UUID; the server takes 8-64 characters). */
  function clientKey() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') {
      try { return window.crypto.randomUUID(); } catch (_) { /* insecure context (plain http on a LAN) */ }
    }
    const bytes = new Uint8Array(16);
    if (window.crypto && window.crypto.getRandomValues) window.crypto.getRandomValues(bytes);
    else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

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

  /** A token named in words, for tooltips: "space + the", "2 spaces", "empty token". */
  function describeToken(text) {
    const t = String(text ?? '');
    if (t === '') return 'empty token';
    if (/^ +$/.test(t)) return t.length === 1 ? 'a single space' : `${t.length} spaces`;
    return t
      .replace(/\n/g, '⏎')
      .replace(/\t/g, '⇥')
      .replace(/^ +/, (m) => (m.length === 1 ? 'space + ' : `${m.length} spaces + `));
  }

  /** A token in running text, whitespace made visible and quoted: “␣the”. */
  function quoteToken(text) {
    const t = String(text ?? '');
    const shown = t === '' ? '∅' : t.replace(/ /g, '␣').replace(/\n/g, '↵').replace(/\t/g, '⇥').replace(/\r/g, '');
    return `“${shown}”`;
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

  // ---------------------------------------------------------------- the answer box (play, rooms, study)

  /**
   * Should the leading-space switch start on after this prefix? Off at the start of a text,
   * after whitespace (the space is already there), after an opening bracket or quote, and
   * inside a word: after a hyphen or apostrophe that follows a letter ("well-", "don'").
   * Decided from the prefix alone, so it says nothing about the true next token.
   */
  function spaceAfter(prefix) {
    const text = String(prefix ?? '');
    if (!text || /\s$/u.test(text)) return false;
    if (/[([{“‘«/]$/u.test(text)) return false;
    if (/[\p{L}\p{N}][-'’]$/u.test(text)) return false;
    return true;
  }

  /**
   * The answer box of the solo game, a phone in a room and a study's token mode: the typed
   * text, the leading-space switch (a click or Alt+S) and a live split of the answer into the
   * model's tokens. The split comes from GET /api/tokenize, which is sent only the typed text:
   * nothing about the true token is fetched before the answer is stored.
   *
   * One rule for the space: the text starts with a space exactly when the switch is on. A space
   * typed at the start turns the switch on (and is not doubled); turning it off removes it.
   *
   * `root` holds the parts, found by class unless given: input (.guess-input), toggle (.switch,
   * optional), toggleState (.switch__state, optional), chips (.chips) and summary
   * (.token-summary), both optional (no live split without them). Options:
   *   isActive()  may the player answer now (the switch, Alt+S and the split work only then)
   *   onChange()  the answer text changed (typing or the switch)
   *   emptySummary  the summary's text while the box is empty
   *   shortcut  false: no page-wide Alt+S (several boxes on one page handle it themselves)
   *   tokenize(text, signal)  how to get the split (default GET /api/tokenize): a promise of
   *             {text, tokens: [{id, text}], n_tokens, starts_with_space}
   *   onTokens(data)  the split shown (data as above), or null when the box is emptied
   */
  function guessInput(root, {
    input = root.querySelector('.guess-input'),
    toggle = root.querySelector('.switch'),
    toggleState = toggle ? toggle.querySelector('.switch__state') : null,
    chips = root.querySelector('.chips'),
    summary = root.querySelector('.token-summary'),
    isActive = () => true,
    onChange = () => {},
    emptySummary = 'Your answer will be split into tokens here.',
    delayMs = 120,
    shortcut = true,
    tokenize: fetchTokens = (t, signal) => api('GET', `/api/tokenize?text=${encodeURIComponent(t)}`, undefined, { signal }),
    onTokens = () => {},
  } = {}) {
    const maxChars = Number(limits.max_guess_chars) || Infinity;
    let spaceOn = false;
    let seq = 0;
    let timer = 0;
    let abort = null;

    const startsWithSpace = (t) => /^\s/.test(t);

    /** The answer as it will be sent: the switch's space, then what was typed. */
    function text() {
      const typed = input.value;
      const full = spaceOn && !startsWithSpace(typed) ? ` ${typed}` : typed;
      return full.length > maxChars ? full.slice(0, maxChars) : full;
    }

    function message(msg, isError) {
      if (!summary) return;
      summary.textContent = msg;
      summary.classList.toggle('is-error', !!isError);
    }

    function clearTokens() {
      seq += 1;
      clearTimeout(timer);
      if (abort) abort.abort();
      abort = null;
      if (chips) chips.textContent = '';
      message(emptySummary, false);
      root.classList.remove('has-tokens');
      onTokens(null);
    }

    function renderTokens(data) {
      const tokens = Array.isArray(data.tokens) ? data.tokens : [];
      chips.textContent = '';
      if (!tokens.length) {
        message(emptySummary, false);
        root.classList.remove('has-tokens');
        onTokens(null);
        return;
      }
      tokens.forEach((t, i) => {
        const c = chip(t.text, i === 0 ? 'chip--scored' : 'chip--extra', describeToken);
        if (i === 0) c.appendChild(el('span', 'chip__tag', 'scored'));
        chips.appendChild(c);
      });
      const n = typeof data.n_tokens === 'number' ? data.n_tokens : tokens.length;
      const space = typeof data.starts_with_space === 'boolean' ? data.starts_with_space : startsWithSpace(data.text || '');
      const parts = [`${n} token${n === 1 ? '' : 's'}`, space ? 'starts with a space' : 'no leading space'];
      if (n > 1) parts.push(`only the first token (${quoteToken(tokens[0].text)}) is scored`);
      message(parts.join(' · '), false);
      root.classList.add('has-tokens');
      onTokens(data);
    }

    async function tokenize(mySeq) {
      if (abort) abort.abort();
      const ctrl = typeof AbortController === 'function' ? new AbortController() : null;
      abort = ctrl;
      try {
        const data = await fetchTokens(text(), ctrl ? ctrl.signal : undefined);
        if (mySeq !== seq || !isActive()) return; // stale
        renderTokens(data);
      } catch (err) {
        if ((err && err.name === 'AbortError') || mySeq !== seq) return;
        chips.textContent = '';
        message((err && err.message) || 'Could not split your answer into tokens.', true);
        onTokens(null);
      }
    }

    function schedule(immediate) {
      clearTimeout(timer);
      if (!chips || !summary || !isActive()) return;
      if (!input.value) {
        clearTokens();
        return;
      }
      const mySeq = ++seq;
      timer = setTimeout(() => tokenize(mySeq), immediate ? 0 : delayMs);
    }

    function setSpace(on) {
      spaceOn = !!on;
      if (!spaceOn && startsWithSpace(input.value)) input.value = input.value.replace(/^\s+/, '');
      if (toggle) toggle.setAttribute('aria-pressed', spaceOn ? 'true' : 'false');
      if (toggleState) toggleState.textContent = spaceOn ? 'on' : 'off';
      onChange();
      schedule(true);
    }

    input.addEventListener('input', () => {
      if (!isActive()) return;
      if (!spaceOn && startsWithSpace(input.value)) {
        setSpace(true); // a typed leading space is the switch's space
        return;
      }
      onChange();
      schedule(false);
    });
    if (toggle) {
      toggle.addEventListener('click', () => {
        if (!isActive()) return;
        setSpace(!spaceOn);
        input.focus();
      });
    }
    // Alt+S with e.code too, for layouts where Alt+S types a character (macOS: ß).
    if (shortcut) document.addEventListener('keydown', (e) => {
      if (e.defaultPrevented || e.isComposing || !toggle) return;
      if (!e.altKey || e.ctrlKey || e.metaKey) return;
      if (e.code !== 'KeyS' && e.key !== 's' && e.key !== 'S') return;
      if (!isActive() || toggle.disabled) return;
      e.preventDefault();
      setSpace(!spaceOn);
    });

    return {
      input,
      text,
      get spaceOn() { return spaceOn; },
      setSpace,
      /** A new question: an empty box and the switch as `spaceAfter(prefix)` says. */
      reset(prefix) {
        input.value = '';
        clearTokens();
        setSpace(spaceAfter(prefix));
      },
      /** Stop any split still on its way (the answer is being sent). */
      stop() {
        seq += 1;
        clearTimeout(timer);
        if (abort) abort.abort();
        abort = null;
      },
      setEnabled(on) {
        input.readOnly = !on;
        if (toggle) toggle.disabled = !on;
      },
      /** Show a note (or an error) where the token split goes. */
      message,
    };
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
    config, limits, clientKey,
    el, renderTokenText, chip, tokenText, describeToken, quoteToken,
    pct, wholePct, capital, sleep,
    ApiError, api,
    spaceAfter, guessInput,
    showScreen, emitWithAck, createToast, createCountdown,
  });
})();

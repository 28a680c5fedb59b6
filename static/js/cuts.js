/* humanlm: "How other models cut this" (issue 13), shared by the solo game's reveal (play.js)
 * and the projector's reveal (host.js): the same short text cut by the game's tokenizer, the
 * other scored models' tokenizers and GPT-4's cl100k_base, one row each, so a player or a class
 * sees that "a token" depends on the model.
 * Plain ES2020, no build step: a classic script loaded after common.js and before the page
 * script. It adds four functions to window.humanlm:
 *
 *   humanlm.cutsText(prefix, target, {words = 8, maxChars})
 *     The text to cut: the end of the prefix (its last `words` words, from the start of the
 *     current sentence when that leaves at least three) and the true token, never longer than
 *     maxChars (default: the server's max guess characters, which GET /api/tokenizers accepts),
 *     trimmed at a word boundary. It starts with the whitespace before its first word, so that
 *     word is cut as it was in the passage (" boil", not "bo" "il"), and ends with `target`.
 *
 *   humanlm.renderCuts(root, reply, {target})
 *     Fill root with GET /api/tokenizers's reply: one row per tokenizer (its name, "N tokens",
 *     and the text as token chips, whitespace made visible as everywhere else; the game's own
 *     tokenizer first and tagged "this game"), then a line naming the models left out (their
 *     tokens come from their servers). With `target` (the true token, the end of the text), the
 *     chips holding its characters are marked.
 *
 *   humanlm.loadCuts(root, text, {target, signal, fetchCuts})
 *     "Cutting the text…" in root, then GET /api/tokenizers?text=… and renderCuts; on an error
 *     a message and a "Try again" button. fetchCuts(text, signal): how to ask (default the GET).
 *     Resolves to the reply (null after an error or an abort).
 *
 *   humanlm.cutsDisclosure(container, {title})
 *     A collapsed <details> "How other models cut this" appended to container, which asks the
 *     server only when it is opened. Returns a handle:
 *       set(text, target)  a new text (closes the box and forgets the last cuts; '' hides it)
 *       open()             open it (as a click on its summary would)
 *       element            the <details>
 *
 * Rows carry data-name, data-tokenizer and data-count; each chip data-text (the token's text).
 */
'use strict';

(() => {
  const base = window.humanlm;
  if (!base) throw new Error('cuts.js needs common.js first');
  const { el, renderTokenText, describeToken, api, limits } = base;

  const TITLE = 'How other models cut this';
  let counter = 0;
  const uid = (name) => `hlm-${name}-${(counter += 1)}`;

  // ------------------------------------------------------------------ the text

  function cutsText(prefix, target, { words = 8, maxChars = Number(limits.max_guess_chars) || 200 } = {}) {
    const before = String(prefix ?? '');
    const next = String(target ?? '');
    if (next.length >= maxChars) return next.slice(0, maxChars);
    const starts = [...before.matchAll(/\S+/g)].map((m) => m.index);
    let word = starts.length > words ? starts[starts.length - words] : (starts[0] ?? before.length);
    // The current sentence, when it began among those words and has a few words of its own.
    const ends = [...before.slice(word).matchAll(/[.!?…]["'”’)\]]*\s+(?=\S)/g)];
    if (ends.length) {
      const last = ends[ends.length - 1];
      const sentence = word + last.index + last[0].length;
      if (starts.filter((s) => s >= sentence).length >= 3) word = sentence;
    }
    // A word with the whitespace before it; within the limit, a later word (mid-word only
    // when no word fits).
    const spaced = (i) => { let j = i; while (j > 0 && /\s/.test(before[j - 1])) j -= 1; return j; };
    const budget = maxChars - next.length;
    const fits = (i) => before.length - i <= budget;
    let from = spaced(word);
    if (!fits(from)) {
      const later = starts.find((s) => fits(spaced(s)));
      const bare = starts.find(fits);
      from = later !== undefined ? spaced(later) : bare !== undefined ? bare : before.length - budget;
    }
    return before.slice(from) + next;
  }

  // ------------------------------------------------------------------ the rows

  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  /** "Llama 3.1 8B: its tokens come from its server, so it is not shown." (and the plural) */
  function leftOutLine(names) {
    const list = names.length === 1 ? names[0]
      : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
    return names.length === 1
      ? `${list}: its tokens come from its server, so it is not shown here.`
      : `${list}: their tokens come from their servers, so they are not shown here.`;
  }

  function renderCuts(root, reply, { target } = {}) {
    root.textContent = '';
    const data = reply && typeof reply === 'object' ? reply : {};
    const text = String(data.text ?? '');
    const rows = Array.isArray(data.tokenizers) ? data.tokenizers : [];
    const next = target === undefined || target === null ? '' : String(target);
    const markFrom = next && text.endsWith(next) ? text.length - next.length : -1;

    const lead = el('p', 'cuts__lead');
    lead.append(`The same text as ${plural(rows.length, 'tokenizer', 'tokenizers')} cut it, one token per box.`);
    if (markFrom >= 0) {
      const key = el('span', 'cuts__key');
      const swatch = el('span', 'cuts__swatch');
      swatch.setAttribute('aria-hidden', 'true');
      key.append(swatch, 'green boxes hold the next token');
      lead.append(' ', key, '.');
    }
    root.append(lead);

    const list = el('ul', 'cuts__rows');
    rows.forEach((row, i) => {
      const tokens = Array.isArray(row.tokens) ? row.tokens : [];
      const n = typeof row.n_tokens === 'number' ? row.n_tokens : tokens.length;
      const name = String(row.name || row.tokenizer || 'a tokenizer');
      const li = el('li', `cut${i === 0 ? ' cut--game' : ''}`);
      li.dataset.name = name;
      li.dataset.tokenizer = String(row.tokenizer || '');
      li.dataset.count = String(n);

      const head = el('p', 'cut__head');
      head.append(el('span', 'cut__name', name));
      if (i === 0) head.append(el('span', 'badge cut__tag', 'this game'));
      head.append(el('span', 'cut__count', plural(n, 'token', 'tokens')));

      const chips = el('ol', 'cut__tokens');
      chips.setAttribute('aria-label', `${name}: ${plural(n, 'token', 'tokens')}`);
      // Marks need the chips to spell the text exactly (a byte piece shown as <0xE2> does not).
      const spells = tokens.map((t) => String(t.text ?? '')).join('') === text;
      let at = 0;
      for (const t of tokens) {
        const piece = String(t.text ?? '');
        const chip = renderTokenText(el('li', 'chip cut__tok'), piece, describeToken);
        if (spells && markFrom >= 0 && at + piece.length > markFrom && piece.length) {
          chip.classList.add('cut__tok--next');
        }
        at += piece.length;
        chips.append(chip);
      }
      li.append(head, chips);
      list.append(li);
    });
    root.append(list);

    const leftOut = Array.isArray(data.left_out) ? data.left_out.map(String).filter(Boolean) : [];
    if (leftOut.length) root.append(el('p', 'cuts__left-out', leftOutLine(leftOut)));
    return root;
  }

  // ------------------------------------------------------------------ asking the server

  const getCuts = (text, signal) => api('GET', `/api/tokenizers?text=${encodeURIComponent(text)}`, undefined, { signal });

  async function loadCuts(root, text, { target, signal, fetchCuts = getCuts } = {}) {
    root.textContent = '';
    root.setAttribute('aria-busy', 'true');
    const waiting = el('p', 'cuts__loading', 'Cutting the text…');
    waiting.setAttribute('role', 'status');
    root.append(waiting);
    try {
      const reply = await fetchCuts(text, signal);
      if (signal && signal.aborted) return null;
      renderCuts(root, reply, { target });
      return reply;
    } catch (err) {
      if ((err && err.name === 'AbortError') || (signal && signal.aborted)) return null;
      root.textContent = '';
      const msg = el('p', 'cuts__error', String((err && err.message) || 'The tokenizers could not be loaded.'));
      msg.setAttribute('role', 'alert');
      const again = el('button', 'btn btn--secondary btn--sm cuts__retry', 'Try again');
      again.type = 'button';
      again.addEventListener('click', () => { loadCuts(root, text, { target, signal, fetchCuts }); });
      root.append(msg, again);
      return null;
    } finally {
      if (!(signal && signal.aborted)) root.removeAttribute('aria-busy');
    }
  }

  // ------------------------------------------------------------------ the disclosure (solo game)

  function cutsDisclosure(container, { title = TITLE, fetchCuts = getCuts } = {}) {
    const details = el('details', 'cuts');
    const summary = el('summary', 'cuts__summary', title);
    const body = el('div', 'cuts__body');
    body.id = uid('cuts');
    details.append(summary, body);
    details.hidden = true;
    container.append(details);

    let current = null; // {text, target}
    let loaded = null;  // the `current` whose cuts are shown (or on their way)
    let abort = null;

    function load() {
      if (!current || loaded === current) return;
      loaded = current;
      if (abort) abort.abort();
      abort = typeof AbortController === 'function' ? new AbortController() : null;
      const mine = current;
      loadCuts(body, mine.text, { target: mine.target, signal: abort ? abort.signal : undefined, fetchCuts })
        .then((reply) => {
          if (mine !== current || !reply || !details.open) return;
          // Bring the rows into view; the CSS's scroll-margin keeps them clear of a footer or
          // button that sticks to the bottom of the window.
          try { details.scrollIntoView({ block: 'nearest' }); } catch (_) { /* old browsers */ }
        });
    }

    details.addEventListener('toggle', () => { if (details.open) load(); });

    return {
      element: details,
      set(text, target) {
        if (abort) abort.abort();
        abort = null;
        details.open = false;
        body.textContent = '';
        body.removeAttribute('aria-busy');
        loaded = null;
        current = text ? { text: String(text), target: target === undefined ? undefined : String(target) } : null;
        details.hidden = !current;
      },
      open() {
        details.open = true;
        load();
      },
    };
  }

  window.humanlm = Object.freeze({ ...base, cutsText, renderCuts, loadCuts, cutsDisclosure });
})();

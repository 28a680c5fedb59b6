/* humanlm: the answer widgets of the two judgement modes (issue 14, "be the distribution"),
 * shared by the solo game (play.js), a study's task page (study.js) and a room's phone page.
 * Plain ES2020, no build step: a classic script loaded after common.js and before the page
 * script. It adds two functions to window.humanlm:
 *
 *   humanlm.pairwiseInput(root, {left, right, scale, onAnswer, onSkip})
 *     "Which came next?": the two tokens as chips (LEFT and RIGHT, whitespace made visible),
 *     the question "How likely is the LEFT one the original?" and the scale's stops as buttons
 *     (a radio group; 99% beside the left token, 1% beside the right one). Tap or drag along the
 *     stops, or with the keyboard: arrows move, Home/End the ends, 1-9 pick 10%-90%, Enter
 *     answers, Esc is "I don't know" (when onSkip is given).
 *     left, right: token texts (strings or {text}); scale: percents, default [1, 10, ..., 90, 99].
 *     onAnswer({left_probability})  an integer percent from the scale.
 *
 *   humanlm.betInput(root, {maxBets = 5, onAnswer, onSkip, tokenize, prefix})
 *     "Bet on it": up to maxBets candidate continuations, each a text box with its own
 *     leading-space switch (Alt+S in the row) and the model's live token split, and points on a
 *     slider (or its - and + buttons); "something else" always holds the rest, so the points add
 *     up to 100. Enter answers, Esc is "I don't know" (when onSkip is given).
 *     tokenize: false (no split), a function (text, signal) => promise of GET /api/tokenize's
 *     reply, or nothing (GET /api/tokenize). prefix: the text before the blank (it decides
 *     whether a new box starts with the leading space on, like the token game's box).
 *     onAnswer({bets: [{text, points}], else_points})  texts exactly as sent (a leading space
 *     counts), points integers, the sum 100; rows left empty with 0 points are left out.
 *
 * Both replace root's content, and return a handle:
 *   focus()           focus the widget (the chosen stop / the first text box)
 *   setEnabled(on)    while an answer is being sent: off (nothing reacts), then on again
 *   message(text, isError)  show a line under the widget ('' clears it)
 *   value()           the payload onAnswer would get now, or null when it is not complete
 *   choose(percent)   pairwise only: pick a stop (as a click would)
 *   destroy()         remove it (and its listeners) from root
 * Call the function again for each question (it starts empty). onSkip(): the player chose
 * "I don't know"; without onSkip there is no such button. The widgets never send anything
 * themselves: the page posts the payload (plus client_key, item ids, mode, reaction_ms).
 *
 *   humanlm.judgementResult(root, {mode, pairwise, distribution, skipped, targetProb})
 *     After the answer: fills root with one sentence ("You put 60% on what came next; the model
 *     put 35% on the same cell.") and the chart: the pair again with both tokens' model
 *     probabilities and you vs the model on the original, or one row per cell (you vs the
 *     model, "not known yet" for null, the true cell marked). pairwise / distribution: the
 *     reply's parts of that name; targetProb: the true token's model probability (for a skip).
 *     Returns {tone: 'ok' | 'bad' | 'skip', title, mark, you, model}: you and model are the
 *     probabilities each put on what came next (null when skipped or unknown).
 */
'use strict';

(() => {
  const base = window.humanlm;
  if (!base) throw new Error('judgements.js needs common.js first');
  const { el, chip, describeToken, quoteToken, tokenText, pct, wholePct } = base;

  const DEFAULT_SCALE = [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99];
  const TOTAL = 100;
  let counter = 0;
  const uid = (name) => `hlm-${name}-${(counter += 1)}`;

  // Look-alike punctuation gets its name, so ’ and ' (or - and –) can be told apart.
  const MARK_NAMES = {
    "'": 'straight apostrophe', '’': 'curly apostrophe', '‘': 'opening curly quote', '"': 'straight quote',
    '“': 'opening curly quote', '”': 'closing curly quote', '-': 'hyphen', '–': 'en dash', '—': 'em dash',
    '.': 'full stop', ',': 'comma', '…': 'ellipsis', '`': 'backtick', '´': 'acute accent',
  };

  /** describeToken, plus the names (or code points) of a short run of marks: "’ curly apostrophe". */
  function describePairToken(text) {
    const core = String(text ?? '').trim();
    if (!core || core.length > 3 || /[\p{L}\p{N}]/u.test(core)) return describeToken(text);
    const names = [...core].map((c) => MARK_NAMES[c] || `U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, '0')}`);
    const lead = /^\s/.test(String(text)) ? 'space + ' : '';
    return `${lead}${names.join(' + ')}`;
  }

  function button(className, text, type = 'button') {
    const b = el('button', className, text);
    b.type = type;
    return b;
  }

  /** The buttons both widgets end with: answer, and "I don't know" when onSkip is given. */
  function answerActions(submitLabel, onSkip) {
    const actions = el('div', 'judge-actions');
    const submit = button('btn btn--primary btn--lg judge-submit', submitLabel);
    actions.append(submit);
    const skip = onSkip ? button('btn btn--secondary judge-skip', 'I don\'t know') : null;
    if (skip) actions.append(skip);
    return { actions, submit, skip };
  }

  /** The message line both widgets share: a polite live region, red for an error. */
  function messageLine(className) {
    const p = el('p', `judge-msg ${className || ''}`.trim());
    p.setAttribute('aria-live', 'polite');
    return {
      node: p,
      set(text, isError) {
        p.textContent = text || '';
        p.classList.toggle('is-error', !!isError && !!text);
      },
    };
  }

  // ------------------------------------------------------------------ pairwise

  function pairwiseInput(root, {
    left, right, scale = DEFAULT_SCALE, onAnswer = () => {}, onSkip = null,
    question = 'How likely is the LEFT one the original?', submitLabel = 'Answer',
  } = {}) {
    const stops = (Array.isArray(scale) && scale.length ? scale : DEFAULT_SCALE).map(Number);
    const order = stops.slice().sort((a, b) => b - a); // 99% beside the LEFT token, 1% beside the RIGHT
    const leftText = tokenText(left);
    const rightText = tokenText(right);
    let value = null;
    let enabled = true;

    const box = el('div', 'pw');
    const qid = uid('pw-q');
    const endsId = uid('pw-ends');

    const side = (which, text) => {
      const s = el('div', `pw__side pw__side--${which}`);
      s.append(el('span', 'pw__tag', which === 'left' ? 'Left' : 'Right'));
      const c = chip(text, 'chip--lg pw__chip', describePairToken);
      s.append(c, el('span', 'pw__desc', describePairToken(text)));
      return s;
    };
    const pair = el('div', 'pw__pair');
    pair.append(side('left', leftText), el('span', 'pw__or', 'or'), side('right', rightText));

    const q = el('p', 'pw__question', question);
    q.id = qid;

    const group = el('div', 'pw__scale');
    group.setAttribute('role', 'radiogroup');
    group.setAttribute('aria-labelledby', qid);
    group.setAttribute('aria-describedby', endsId);
    const buttons = order.map((v) => {
      const b = button('pw__stop');
      b.setAttribute('role', 'radio');
      b.setAttribute('aria-checked', 'false');
      b.tabIndex = -1;
      b.dataset.value = String(v);
      b.append(el('span', 'pw__num', String(v)), el('span', 'pw__pct', '%'));
      b.setAttribute('aria-label', `${v}%`);
      b.classList.add(v > 50 ? 'pw__stop--left' : v < 50 ? 'pw__stop--right' : 'pw__stop--even');
      group.append(b);
      return b;
    });
    const ends = el('div', 'pw__ends');
    ends.id = endsId;
    ends.append(el('span', null, '← surely LEFT'), el('span', 'pw__ends-mid', 'can’t tell'),
      el('span', null, 'surely RIGHT →'));

    const readout = el('p', 'pw__readout');
    readout.setAttribute('aria-live', 'polite');
    const msg = messageLine('pw__msg');

    const { actions, submit, skip } = answerActions(submitLabel, onSkip);
    const keys = el('p', 'shortcuts judge-keys');
    keys.append(keyHint(['←', '→'], 'move'), keyHint(['1'], '…', ['9'], '10%–90%'), keyHint(['Enter'], 'answer'));
    if (onSkip) keys.append(keyHint(['Esc'], 'I don\'t know'));

    box.append(pair, q, group, ends, readout, msg.node, actions, keys);
    root.replaceChildren(box);

    const middle = buttons[Math.floor(buttons.length / 2)];
    middle.tabIndex = 0;

    function describeChoice(v) {
      if (v === null) return 'Tap a percentage, or drag along them.';
      if (v === 50) return 'You say 50%: you can’t tell which came next.';
      const favoured = v > 50 ? 'left' : 'right';
      const text = v > 50 ? leftText : rightText;
      return `You say ${v}%: the ${favoured} one, ${quoteToken(text)}, is more likely the original.`;
    }

    function choose(v, focus) {
      if (!enabled) return;
      const index = order.indexOf(Number(v));
      if (index < 0) return;
      value = order[index];
      buttons.forEach((b, i) => {
        const on = i === index;
        b.setAttribute('aria-checked', on ? 'true' : 'false');
        b.tabIndex = on ? 0 : -1;
      });
      box.dataset.lean = value > 50 ? 'left' : value < 50 ? 'right' : 'even';
      readout.textContent = describeChoice(value);
      msg.set('');
      if (focus) buttons[index].focus();
    }

    function answer() {
      if (!enabled) return;
      if (value === null) {
        msg.set('Choose how likely the left one is first: tap a percentage (or press 1–9).', true);
        (buttons.find((b) => b.tabIndex === 0) || middle).focus();
        return;
      }
      onAnswer({ left_probability: value });
    }

    readout.textContent = describeChoice(null);
    buttons.forEach((b) => b.addEventListener('click', () => choose(Number(b.dataset.value), true)));

    // Drag along the stops with a finger or the mouse: the stop under the pointer is chosen.
    let dragging = false;
    const stopAt = (x) => {
      let best = null;
      let bestDist = Infinity;
      buttons.forEach((b) => {
        const r = b.getBoundingClientRect();
        const d = x < r.left ? r.left - x : x > r.right ? x - r.right : 0;
        if (d < bestDist) { bestDist = d; best = b; }
      });
      return best;
    };
    // A tap chooses where the finger lifts; a scroll that starts on the scale chooses nothing
    // (the browser takes the gesture over: pointercancel).
    const chooseAt = (x, focus) => {
      const b = stopAt(x);
      if (b && Number(b.dataset.value) !== value) choose(Number(b.dataset.value), focus);
    };
    group.addEventListener('pointerdown', (e) => {
      if (!enabled || e.button > 0) return;
      dragging = true;
      try { group.setPointerCapture(e.pointerId); } catch (_) { /* not capturable: clicks still work */ }
    });
    group.addEventListener('pointermove', (e) => { if (dragging) chooseAt(e.clientX, false); });
    group.addEventListener('pointerup', (e) => {
      if (!dragging) return;
      dragging = false;
      chooseAt(e.clientX, true);
      const chosen = buttons.find((b) => b.tabIndex === 0);
      if (chosen && document.activeElement !== chosen) chosen.focus();
    });
    group.addEventListener('pointercancel', () => { dragging = false; });

    box.addEventListener('keydown', (e) => {
      if (e.defaultPrevented || e.isComposing || !enabled) return;
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const onStop = e.target instanceof HTMLElement && e.target.classList.contains('pw__stop');
      const here = onStop ? buttons.indexOf(e.target) : -1;
      const move = (i) => { e.preventDefault(); choose(order[Math.max(0, Math.min(order.length - 1, i))], true); };
      if (onStop && (e.key === 'ArrowLeft' || e.key === 'ArrowUp')) return move(value === null ? here : here - 1);
      if (onStop && (e.key === 'ArrowRight' || e.key === 'ArrowDown')) return move(value === null ? here : here + 1);
      if (onStop && e.key === 'Home') return move(0);
      if (onStop && e.key === 'End') return move(order.length - 1);
      if (/^[1-9]$/.test(e.key) && order.includes(Number(e.key) * 10)) {
        e.preventDefault();
        choose(Number(e.key) * 10, true);
        return;
      }
      if (e.key === 'Enter' && !e.repeat && (onStop || e.target === box)) {
        e.preventDefault();
        answer();
        return;
      }
      if (e.key === 'Escape' && onSkip) {
        e.preventDefault();
        onSkip();
      }
    });
    submit.addEventListener('click', answer);
    if (skip) skip.addEventListener('click', () => { if (enabled) onSkip(); });

    return {
      focus() {
        const target = buttons.find((b) => b.tabIndex === 0) || middle;
        try { target.focus({ preventScroll: true }); } catch (_) { target.focus(); }
      },
      setEnabled(on) {
        enabled = !!on;
        buttons.forEach((b) => { b.disabled = !enabled; });
        submit.disabled = !enabled;
        if (skip) skip.disabled = !enabled;
        box.classList.toggle('is-busy', !enabled);
      },
      message: (text, isError) => msg.set(text, isError),
      value: () => (value === null ? null : { left_probability: value }),
      choose: (v) => choose(v, true),
      destroy() { box.remove(); },
      element: box,
    };
  }

  /** <span><kbd>a</kbd>…<kbd>b</kbd> words</span> for the shortcut line. */
  function keyHint(...parts) {
    const span = el('span');
    const words = parts.pop();
    parts.forEach((p) => {
      if (Array.isArray(p)) p.forEach((k, i) => { if (i) span.append(' '); span.append(el('kbd', null, k)); });
      else span.append(p);
    });
    span.append(` ${words}`);
    return span;
  }

  // ------------------------------------------------------------------ distribution

  function betInput(root, {
    maxBets = 5, onAnswer = () => {}, onSkip = null, tokenize, prefix = '',
    step = 5, submitLabel = 'Place my bets',
  } = {}) {
    const limit = Math.max(1, Math.min(5, Number(maxBets) || 5));
    const rows = [];
    let enabled = true;

    const box = el('div', 'bets');
    const intro = el('p', 'bets__intro');
    intro.append('Type what might come next, one guess per box, and spread ', el('strong', null, '100 points'),
      ' over your guesses. Points you don’t place go on ', el('strong', null, 'something else'), '.');
    const list = el('ol', 'bets__list');
    const elseRow = el('li', 'bet-else');
    const elseLabel = el('span', 'bet-else__label', 'Something else');
    const elseTrack = el('span', 'bet-else__track');
    const elseFill = el('span', 'bet-else__fill');
    elseTrack.append(elseFill);
    const elseOut = el('output', 'bet-else__points');
    elseOut.setAttribute('aria-live', 'polite');
    elseRow.append(elseLabel, elseTrack, elseOut);

    const add = button('btn btn--ghost btn--sm bets__add');
    add.append(el('span', null, '+ Add a guess'));

    const total = el('div', 'bets__total');
    const totalBar = el('div', 'bets__bar');
    totalBar.setAttribute('aria-hidden', 'true');
    const totalText = el('p', 'bets__sum');
    total.append(totalBar, totalText);

    const note = el('p', 'bets__note');
    note.setAttribute('aria-live', 'polite');
    const msg = messageLine('bets__msg');

    const { actions, submit, skip } = answerActions(submitLabel, onSkip);
    const keys = el('p', 'shortcuts judge-keys');
    keys.append(keyHint(['Tab'], 'next box or slider'), keyHint(['←', '→'], 'points'),
      keyHint(['Alt'], '+', ['S'], 'leading space'), keyHint(['Enter'], 'place bets'));
    if (onSkip) keys.append(keyHint(['Esc'], 'I don\'t know'));

    const elseBox = el('div', 'bets__else');
    elseBox.append(el('ol', 'bets__list bets__list--else'));
    elseBox.firstChild.append(elseRow);
    box.append(intro, list, add, elseBox, total, note, msg.node, actions, keys);
    root.replaceChildren(box);

    const used = () => rows.reduce((s, r) => s + r.points, 0);
    const elsePoints = () => TOTAL - used();

    function rowLabel(row) { return `Guess ${rows.indexOf(row) + 1}`; }

    function renderTotals() {
      const rest = elsePoints();
      elseOut.textContent = `${rest} pts`;
      elseOut.setAttribute('aria-label', `Something else: ${rest} points`);
      elseFill.style.width = `${rest}%`;
      totalBar.textContent = '';
      rows.forEach((r, i) => {
        if (r.points <= 0) return;
        const seg = el('span', `bets__seg bets__seg--${i + 1}`);
        seg.style.width = `${r.points}%`;
        totalBar.append(seg);
      });
      if (rest > 0) {
        const seg = el('span', 'bets__seg bets__seg--else');
        seg.style.width = `${rest}%`;
        totalBar.append(seg);
      }
      const parts = rows.map((r) => r.points);
      totalText.textContent = '';
      totalText.append(el('strong', null, `${TOTAL} points`), ` = ${parts.join(' + ')} + ${rest} on something else`);
      rows.forEach((r, i) => {
        r.num.textContent = String(i + 1);
        r.input.setAttribute('aria-label', `Guess ${i + 1}: what comes next`);
        r.range.setAttribute('aria-label', `Points on guess ${i + 1}`);
        r.minus.setAttribute('aria-label', `${step} points fewer on guess ${i + 1}`);
        r.plus.setAttribute('aria-label', `${step} points more on guess ${i + 1}`);
        r.remove.setAttribute('aria-label', `Remove guess ${i + 1}`);
        r.remove.hidden = rows.length < 2;
        r.li.classList.toggle('is-zero', r.points === 0);
      });
      add.disabled = !enabled || rows.length >= limit;
      add.firstChild.textContent = rows.length >= limit ? `${limit} guesses at most` : '+ Add a guess';
    }

    function setPoints(row, wanted) {
      const room = row.points + elsePoints();
      const v = Math.max(0, Math.min(room, Math.round(Number(wanted) || 0)));
      row.points = v;
      row.range.value = String(v);
      row.range.setAttribute('aria-valuetext', `${v} points${v === room && room < TOTAL ? ' (all that is left)' : ''}`);
      row.out.textContent = String(v);
      renderTotals();
    }

    function checkDuplicates() {
      const groups = new Map();
      rows.forEach((r, i) => {
        if (!r.first || !r.input.value.trim()) return;
        const key = r.first.id !== undefined ? `id:${r.first.id}` : `text:${r.first.text}`;
        if (!groups.has(key)) groups.set(key, { text: r.first.text, rows: [] });
        groups.get(key).rows.push(i);
      });
      const lines = [];
      groups.forEach((g) => {
        if (g.rows.length < 2) return;
        const names = g.rows.map((i) => String(i + 1));
        const pts = g.rows.reduce((s, i) => s + rows[i].points, 0);
        lines.push(`Guesses ${names.slice(0, -1).join(', ')} and ${names[names.length - 1]} start with the same token ${quoteToken(g.text)}: they count as one bet of ${pts} points.`);
      });
      note.textContent = lines.join(' ');
      rows.forEach((r, i) => r.li.classList.toggle('is-shared', lines.length > 0
        && [...groups.values()].some((g) => g.rows.length > 1 && g.rows.includes(i))));
    }

    function addRow(focus) {
      if (rows.length >= limit) return null;
      const li = el('li', 'bet-row');
      const num = el('span', 'bet-row__num');
      num.setAttribute('aria-hidden', 'true');
      const input = el('input', 'guess-input bet-row__input');
      input.type = 'text';
      input.autocomplete = 'off';
      input.spellcheck = false;
      input.setAttribute('autocorrect', 'off');
      input.setAttribute('autocapitalize', 'off');
      input.setAttribute('enterkeyhint', 'done');
      input.placeholder = rows.length ? 'another guess…' : 'your best guess…';
      if (base.limits.max_guess_chars) input.maxLength = Number(base.limits.max_guess_chars);
      const toggle = button('switch bet-row__space');
      toggle.setAttribute('aria-pressed', 'false');
      toggle.title = 'Leading space (Alt+S)';
      const track = el('span', 'switch__track');
      track.setAttribute('aria-hidden', 'true');
      track.append(el('span', 'switch__thumb'));
      toggle.append(track, el('span', 'switch__label', 'space'), el('span', 'switch__state', 'off'));
      const remove = button('bet-row__remove', '×');
      const minus = button('bet-row__step', '−');
      const plus = button('bet-row__step', '+');
      minus.tabIndex = -1;
      plus.tabIndex = -1;
      const range = el('input', 'bet-row__range');
      range.type = 'range';
      range.min = '0';
      range.max = String(TOTAL);
      range.step = String(step);
      range.value = '0';
      const out = el('output', 'bet-row__points', '0');
      out.setAttribute('aria-hidden', 'true');
      const pts = el('span', 'bet-row__unit', 'pts');
      pts.setAttribute('aria-hidden', 'true');
      const split = el('div', 'bet-row__split');
      const chips = el('div', 'chips');
      chips.setAttribute('aria-hidden', 'true');
      const summary = el('p', 'token-summary');
      summary.setAttribute('aria-live', 'polite');
      split.append(chips, summary);
      split.prepend(toggle);
      const head = el('div', 'bet-row__head');
      head.append(num, input);
      const points = el('div', 'bet-row__pointsbox');
      points.append(minus, range, plus, out, pts);
      li.append(head, points, split, remove); // remove last for Tab, drawn top right (app.css)
      list.append(li);
      const summaryId = uid('bet-sum');
      summary.id = summaryId;
      input.setAttribute('aria-describedby', summaryId);

      const row = { li, num, input, toggle, remove, minus, plus, range, out, points: 0, first: null };
      row.box = base.guessInput(li, {
        input, toggle, chips: tokenize === false ? null : chips, summary: tokenize === false ? null : summary,
        isActive: () => enabled, shortcut: false, emptySummary: '',
        ...(typeof tokenize === 'function' ? { tokenize } : {}),
        onChange: () => { msg.set(''); if (!input.value.trim()) { row.first = null; checkDuplicates(); } },
        onTokens: (data) => {
          const tokens = data && Array.isArray(data.tokens) ? data.tokens : [];
          row.first = tokens.length ? tokens[0] : null;
          checkDuplicates();
        },
      });
      row.box.reset(prefix);
      rows.push(row);

      range.addEventListener('input', () => { setPoints(row, range.value); checkDuplicates(); msg.set(''); });
      minus.addEventListener('click', () => { if (enabled) { setPoints(row, row.points - step); checkDuplicates(); } });
      plus.addEventListener('click', () => { if (enabled) { setPoints(row, row.points + step); checkDuplicates(); } });
      remove.addEventListener('click', () => {
        if (!enabled || rows.length < 2) return;
        const i = rows.indexOf(row);
        row.box.stop();
        rows.splice(i, 1);
        li.remove();
        renderTotals();
        checkDuplicates();
        const next = rows[Math.min(i, rows.length - 1)];
        if (next) next.input.focus();
      });
      setPoints(row, 0);
      if (focus) input.focus();
      return row;
    }

    function payload() {
      const bets = [];
      for (const r of rows) {
        const text = r.box.text();
        if (!text.trim()) {
          if (r.points > 0) {
            return { error: `${rowLabel(r)} is empty but has ${r.points} points: type what might come next, or remove it.`, row: r };
          }
          continue;
        }
        bets.push({ text, points: r.points });
      }
      if (!bets.length) return { error: 'Type at least one guess of what comes next (or choose “I don’t know”).', row: rows[0] };
      if (bets.every((b) => b.points === 0)) {
        return { error: 'All 100 points are on “something else”: give your guesses some points with the sliders.', row: rows[0], slider: true };
      }
      return { value: { bets, else_points: elsePoints() } };
    }

    function answer() {
      if (!enabled) return;
      const p = payload();
      if (p.error) {
        msg.set(p.error, true);
        if (p.row) (p.slider ? p.row.range : p.row.input).focus();
        return;
      }
      rows.forEach((r) => r.box.stop());
      onAnswer(p.value);
    }

    add.addEventListener('click', () => { if (enabled) addRow(true); });
    submit.addEventListener('click', answer);
    if (skip) skip.addEventListener('click', () => { if (enabled) onSkip(); });
    box.addEventListener('keydown', (e) => {
      if (e.defaultPrevented || e.isComposing || !enabled) return;
      const row = rows.find((r) => r.li.contains(e.target));
      if (row && e.altKey && !e.ctrlKey && !e.metaKey && (e.code === 'KeyS' || e.key === 's' || e.key === 'S')) {
        e.preventDefault();
        row.box.setSpace(!row.box.spaceOn);
        row.input.focus();
        return;
      }
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === 'Enter' && !e.repeat && (e.target instanceof HTMLInputElement || e.target === box)) {
        e.preventDefault();
        answer();
        return;
      }
      if (e.key === 'Escape' && onSkip) {
        e.preventDefault();
        onSkip();
      }
    });

    addRow(false);
    renderTotals();

    return {
      focus() {
        const target = rows[0].input;
        try { target.focus({ preventScroll: true }); } catch (_) { target.focus(); }
      },
      setEnabled(on) {
        enabled = !!on;
        rows.forEach((r) => {
          r.box.setEnabled(enabled);
          r.range.disabled = !enabled;
          r.minus.disabled = !enabled;
          r.plus.disabled = !enabled;
          r.remove.disabled = !enabled;
        });
        submit.disabled = !enabled;
        if (skip) skip.disabled = !enabled;
        add.disabled = !enabled || rows.length >= limit;
        box.classList.toggle('is-busy', !enabled);
      },
      message: (text, isError) => msg.set(text, isError),
      value() { const p = payload(); return p.error ? null : p.value; },
      destroy() { rows.forEach((r) => r.box.stop()); box.remove(); },
      element: box,
    };
  }

  // ------------------------------------------------------------------ after the answer

  /** "You ▇▇▇▇▇ 80%": one side's probability as a bar (or "not known yet"). */
  function vsRow(who, p, className) {
    const row = el('div', `vs-row ${className}`);
    row.append(el('span', 'vs-row__who', who));
    const track = el('span', 'vs-row__track');
    track.setAttribute('aria-hidden', 'true');
    const known = p !== null && p !== undefined;
    if (known) {
      const fill = el('span', 'vs-row__fill');
      fill.style.width = `${Math.max(0, Math.min(100, Number(p) * 100)).toFixed(1)}%`;
      track.append(fill);
    }
    row.append(track, el('span', `vs-row__pct${known ? '' : ' vs-row__pct--unknown'}`,
      known ? pct(p) : 'not known yet'));
    return row;
  }

  function judgementResult(root, {
    mode, pairwise = null, distribution = null, skipped = false, targetProb = null,
  } = {}) {
    const sentence = el('p', 'judge-sentence');
    const detail = el('div', 'judge-detail');
    root.replaceChildren(sentence, detail);
    let tone = 'skip';
    let title = 'Skipped: no answer this time';
    let you = null;
    let model = null;
    if (mode === 'pairwise' && pairwise) {
      const pw = pairwise;
      const r = skipped ? null : pw.true_probability;
      const m = pw.model_true_probability;
      const side = pw.true_side === 'left' ? 'LEFT' : 'RIGHT';
      model = m;
      if (r !== null && r !== undefined) {
        you = r;
        tone = r > 0.5 ? 'ok' : r < 0.5 ? 'bad' : 'skip';
        title = r > 0.5 ? 'Good call!' : r < 0.5 ? 'Fooled this time' : 'A fair 50/50';
        sentence.append(`It was the ${side} one. You gave the original ${wholePct(r)}; the model, asked about the same pair, gives it ${pct(m)}.`);
      } else {
        sentence.append(`It was the ${side} one. Asked about the same pair, the model gives the original ${pct(m)}.`);
      }
      const pair = el('div', 'pwr__pair');
      ['left', 'right'].forEach((which) => {
        const isTrue = pw.true_side === which;
        const token = (isTrue ? pw.true : pw.alternative) || {};
        const box = el('div', `pwr__side${isTrue ? ' is-true' : ''}`);
        box.append(el('span', 'pw__tag', which === 'left' ? 'Left' : 'Right'),
          chip(token.text, isTrue ? 'chip--target chip--lg' : 'chip--lg', describePairToken),
          el('span', `tag ${isTrue ? 'tag--target' : 'tag--alt'}`, isTrue ? 'came next' : 'the other one'),
          el('span', 'pwr__prob', `model: ${pct(token.prob)}`));
        pair.append(box);
      });
      const vs = el('div', 'vs-rows');
      vs.append(el('p', 'vs-rows__title', 'Chance given to the original'));
      if (you !== null) vs.append(vsRow('You', r, 'vs-row--you'));
      vs.append(vsRow('Model', m, 'vs-row--model'));
      detail.append(pair, vs);
      const ls = pw.log_score || {};
      if (you !== null && typeof ls.person === 'number' && typeof ls.model === 'number') {
        detail.append(el('p', 'judge-note', `Log score, the number that adds up fairly over many answers (nearer 0 is better): you ${ls.person.toFixed(2)}, the model ${ls.model.toFixed(2)}.`));
      }
    } else if (mode === 'distribution' && distribution && !skipped) {
      const dist = distribution;
      const cells = Array.isArray(dist.cells) ? dist.cells : [];
      const trueCell = cells.find((c) => c.is_true);
      const onElse = !trueCell || trueCell.else;
      you = dist.person_true;
      model = dist.model_true;
      tone = onElse ? 'bad' : 'ok';
      title = onElse ? 'Something else came next' : 'Your bets covered it';
      const modelPart = model === null || model === undefined
        ? 'the model’s share of the same cell is not known yet.'
        : `the model put ${pct(model)} on the same cell.`;
      sentence.append(`You put ${wholePct(you)} on what came next; ${modelPart}`);
      const list = el('ul', 'dist');
      list.setAttribute('aria-label', 'Your points and the model’s probability for each of your guesses');
      cells.forEach((c) => {
        const li = el('li', `dist__cell${c.is_true ? ' is-true' : ''}${c.else ? ' dist__cell--else' : ''}`);
        const label = el('div', 'dist__label');
        if (c.else) label.append(el('span', 'dist__else', 'Something else'));
        else (c.texts || []).forEach((t) => label.append(chip(t, c.is_true ? 'chip--target' : '', describeToken)));
        if (c.texts && c.texts.length > 1) label.append(el('span', 'dist__merged', 'same first token: one bet'));
        if (c.is_true) label.append(el('span', 'tag tag--target', 'came next'));
        li.append(label, vsRow('You', c.person, 'vs-row--you'), vsRow('Model', c.model, 'vs-row--model'));
        list.append(li);
      });
      detail.append(list);
      if (cells.some((c) => c.model === null || c.model === undefined)) {
        detail.append(el('p', 'judge-note', 'The model’s probability is known here only for tokens among its top candidates; the rest is filled in later.'));
      }
    } else if (mode === 'distribution') {
      sentence.append(`You skipped this one.${targetProb === null || targetProb === undefined ? ''
        : ` The model gave what came next ${pct(targetProb)}.`}`);
    }
    const mark = tone === 'ok' ? '✓' : tone === 'bad' ? '✗' : skipped ? '?' : '=';
    return { tone, title, mark, you, model };
  }

  window.humanlm = Object.freeze({ ...base, pairwiseInput, betInput, judgementResult });
})();

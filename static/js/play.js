/* humanlm: game page. Plain ES2020, no dependencies. */
'use strict';

(() => {
  const root = document.getElementById('game');
  if (!root) return;

  const $ = (id) => document.getElementById(id);
  const els = {
    alert: $('alert'),
    alertMessage: $('alert-message'),
    alertRetry: $('alert-retry'),
    top: $('game-top'),
    docTitle: $('doc-title'),
    docRegister: $('doc-register'),
    newPassage: $('new-passage'),
    progressText: $('progress-text'),
    progressBar: $('progress-bar'),
    scoreMini: $('scoreline-mini'),
    passage: $('passage'),
    ask: $('ask'),
    form: $('guess-form'),
    input: $('guess-input'),
    guessBtn: $('guess-btn'),
    skipBtn: $('skip-btn'),
    reveal: $('reveal'),
    verdict: $('verdict'),
    verdictMark: $('verdict-mark'),
    verdictTitle: $('verdict-title'),
    targetChip: $('target-chip'),
    yourGuess: $('your-guess'),
    hint: $('reveal-hint'),
    bars: $('bars'),
    modelLine: $('model-line'),
    modelNameInline: $('model-name-inline'),
    scoreline: $('scoreline'),
    nextBtn: $('next-btn'),
    done: $('done'),
    doneScore: $('done-score'),
    roundText: $('round-text'),
    difficulty: $('difficulty'),
    roundCard: $('round-card'),
    judge: $('judge'),
    judgeLabel: $('judge-label'),
    judgeLead: $('judge-lead'),
    judgeWidget: $('judge-widget'),
    judgeResult: $('judge-result'),
    modeRadios: Array.from(document.querySelectorAll('input[name="answer-mode"]')),
  };

  const corpus = root.dataset.corpus || null;
  const modelName = root.dataset.modelName || 'the model';
  if (els.modelNameInline && root.dataset.modelName) els.modelNameInline.textContent = modelName;

  const GUESS_RETRY_DELAYS_MS = [400, 1000, 2500, 5000];

  const state = {
    phase: 'loading', // loading | question | submitting | reveal | done | error
    question: null,
    clientKey: null,
    shownAt: 0,
    rendered: { docId: null, count: 0 },
    nextSeq: 0,
    revealedAt: 0,
    // Rounds: the kind asked for (the server keeps the round itself) and a finished round's id.
    mode: {
      daily: root.dataset.daily === '1',
      difficulty: root.dataset.difficulty || 'any',
    },
    finishedRound: null,
    // How the player answers: token (type it), pairwise (which came next?) or distribution (bets).
    answerMode: 'token',
    widget: null, // the judgement widget of the open question (static/js/judgements.js)
    refresh: null, // asking again for a reveal's model numbers not known yet (watchForModelNumbers)
  };

  // ---------------------------------------------------------------- how to play (answer modes)

  const ANSWER_MODES = ['token', 'pairwise', 'distribution'];
  const MODE_KEY = 'humanlm.playMode';
  const MODE_WORDS = {
    token: { title: 'What is the next token?', short: 'Type the next token' },
    pairwise: {
      title: 'Which came next?',
      short: 'Which came next?',
      lead: 'One of these two tokens really came next; the other is one the model might have written instead.',
    },
    distribution: {
      title: 'Bet on the next token',
      short: 'Bet on it',
    },
  };
  const judging = () => state.answerMode !== 'token';

  function storedMode() {
    try { return window.localStorage.getItem(MODE_KEY); } catch (_) { return null; }
  }

  /** The mode to start in: ?mode= in the address, else token for the daily passage or a chosen
   *  difficulty (rounds are token mode's), else the mode the player chose last time. */
  function initialMode() {
    const params = new URLSearchParams(window.location.search);
    const asked = params.get('mode');
    if (ANSWER_MODES.includes(asked)) {
      try { window.localStorage.setItem(MODE_KEY, asked); } catch (_) { /* not remembered */ }
      return asked;
    }
    if (state.mode.daily || state.mode.difficulty !== 'any') return 'token';
    const remembered = storedMode();
    return ANSWER_MODES.includes(remembered) ? remembered : 'token';
  }

  function applyMode(mode) {
    state.answerMode = mode;
    root.dataset.answerMode = mode;
    els.modeRadios.forEach((r) => { r.checked = r.value === mode; });
    if (mode !== 'token') state.mode = { daily: false, difficulty: 'any' };
  }

  /** The address says the mode (so a link can open it); the daily and difficulty choices are
   *  token mode's and leave the address when another mode is chosen. */
  function rememberMode(mode) {
    try { window.localStorage.setItem(MODE_KEY, mode); } catch (_) { /* private mode: not remembered */ }
    const url = new URL(window.location.href);
    if (mode === 'token') {
      url.searchParams.delete('mode');
    } else {
      url.searchParams.set('mode', mode);
      url.searchParams.delete('daily');
      url.searchParams.delete('difficulty');
    }
    window.history.replaceState(null, '', url.pathname + url.search + url.hash);
  }

  // A running tally of the judgement modes in this tab (the server's scores count tokens):
  // answers, skips, and the probability each side put on what really came next.
  function tallyKey(mode) { return `humanlm.tally.${mode}`; }
  function readTally(mode) {
    const empty = { n: 0, skipped: 0, you: 0, model: 0, modelN: 0 };
    try {
      const t = JSON.parse(window.sessionStorage.getItem(tallyKey(mode)) || 'null');
      return t && typeof t === 'object' ? { ...empty, ...t } : empty;
    } catch (_) {
      return empty;
    }
  }
  function addToTally(mode, you, model, skipped) {
    const t = readTally(mode);
    if (skipped) {
      t.skipped += 1;
    } else {
      t.n += 1;
      t.you += Number(you) || 0;
      if (model !== null && model !== undefined) { t.model += Number(model); t.modelN += 1; }
    }
    try { window.sessionStorage.setItem(tallyKey(mode), JSON.stringify(t)); } catch (_) { /* not kept */ }
    return t;
  }
  /** The model's number of an answer already counted, once it is known (filled later). */
  function addModelToTally(mode, model) {
    const t = readTally(mode);
    t.model += Number(model) || 0;
    t.modelN += 1;
    try { window.sessionStorage.setItem(tallyKey(mode), JSON.stringify(t)); } catch (_) { /* not kept */ }
  }

  // ---------------------------------------------------------------- helpers

  const {
    el, sleep, ApiError, api, clientKey, pct, wholePct, describeToken, quoteToken,
  } = window.humanlm;

  /** Whole-number percentage for score lines. */
  const ratio = (num, den) => (den ? wholePct(num / den) : '0%');

  // The shared token rendering, plus a tooltip naming the token (describeToken).
  const renderTokenText = (node, text) => window.humanlm.renderTokenText(node, text, describeToken);
  const chip = (text, extraClass) => window.humanlm.chip(text, extraClass, describeToken);

  // The answer box: typed text, leading-space switch (Alt+S) and the live token split.
  const answerBox = window.humanlm.guessInput(els.ask, {
    isActive: () => state.phase === 'question' && !judging(),
    onChange: () => updateSlotPreview(),
    emptySummary: 'Your guess will be split into tokens here.',
  });

  // "How other models cut this" under the reveal (static/js/cuts.js): collapsed, and asked for
  // only when the player opens it.
  const cuts = window.humanlm.cutsDisclosure($('cuts-slot'));

  // ---------------------------------------------------------------- alert

  function showAlert(message, retry) {
    const text = String(message || 'Unknown error.');
    els.alertMessage.textContent = text.charAt(0).toUpperCase() + text.slice(1);
    els.alert.hidden = false;
    if (retry) {
      els.alertRetry.hidden = false;
      els.alertRetry.onclick = () => {
        hideAlert();
        retry();
      };
    } else {
      els.alertRetry.hidden = true;
      els.alertRetry.onclick = null;
    }
  }

  function hideAlert() {
    els.alert.hidden = true;
    els.alertRetry.onclick = null;
  }

  function setPhase(phase) {
    state.phase = phase;
    root.dataset.state = phase;
    root.setAttribute('aria-busy', phase === 'loading' || phase === 'submitting' ? 'true' : 'false');
    if (phase !== 'reveal') stopWatching(); // the player moved on: no more asking
  }

  // ---------------------------------------------------------------- scores

  function scoreText(stats) {
    if (!stats || !stats.answered) return 'No answers yet: you vs the model starts now.';
    const n = stats.answered;
    let s = `You ${stats.correct}/${n} (${ratio(stats.correct, n)}) · Model ${stats.model_correct}/${n} (${ratio(stats.model_correct, n)}) on the same tokens`;
    if (stats.skipped) s += ` · ${stats.skipped} skipped`;
    return s;
  }

  /** The judgement modes' tally in words: "3 answered · on what came next: you 62%, the model 71%". */
  function tallyText(t) {
    if (!t.n && !t.skipped) return 'No answers yet in this mode: you vs the model starts now.';
    const parts = [`${t.n} answered`];
    if (t.n) {
      parts.push(`on average on what came next: you ${wholePct(t.you / t.n)}, the model ${t.modelN ? wholePct(t.model / t.modelN) : 'not known yet'}`);
    }
    if (t.skipped) parts.push(`${t.skipped} skipped`);
    return parts.join(' · ');
  }

  function renderTallyInto(node, t) {
    node.textContent = '';
    if (!t.n) {
      node.textContent = tallyText(t);
      return;
    }
    const you = el('span', 'score score--you');
    you.append(el('span', 'score__who', 'You'), ' ', el('strong', null, wholePct(t.you / t.n)));
    const model = el('span', 'score score--model');
    model.append(el('span', 'score__who', 'Model'), ' ', t.modelN ? el('strong', null, wholePct(t.model / t.modelN))
      : el('span', 'score__note', 'not known yet'));
    node.append(you, el('span', 'sep', ' · '), model,
      el('span', 'score__note', ` on what came next, on average over ${t.n} answer${t.n === 1 ? '' : 's'}`));
    if (t.skipped) node.append(el('span', 'score__note', ` · ${t.skipped} skipped`));
  }

  function renderScoreInto(node, stats) {
    if (judging()) {
      renderTallyInto(node, readTally(state.answerMode));
      return;
    }
    node.textContent = '';
    if (!stats || !stats.answered) {
      node.textContent = scoreText(stats);
      return;
    }
    const n = stats.answered;
    const you = el('span', 'score score--you');
    you.append(el('span', 'score__who', 'You'), ` ${stats.correct}/${n} `, el('strong', null, `(${ratio(stats.correct, n)})`));
    const model = el('span', 'score score--model');
    model.append(el('span', 'score__who', 'Model'), ` ${stats.model_correct}/${n} `, el('strong', null, `(${ratio(stats.model_correct, n)})`));
    node.append(you, el('span', 'sep', ' · '), model, el('span', 'score__note', ' on the same tokens'));
    if (stats.skipped) node.append(el('span', 'score__note', ` · ${stats.skipped} skipped`));
  }

  function renderMiniScore(stats) {
    const node = els.scoreMini;
    node.textContent = '';
    node.removeAttribute('aria-label'); // an empty line has nothing to name
    if (judging()) {
      const t = readTally(state.answerMode);
      if (!t.n) return;
      node.append(
        el('span', 'pill pill--you', `You ${wholePct(t.you / t.n)}`),
        el('span', 'pill pill--model', `Model ${t.modelN ? wholePct(t.model / t.modelN) : '–'}`),
      );
      node.setAttribute('aria-label', tallyText(t));
      return;
    }
    if (!stats || !stats.answered) return;
    const n = stats.answered;
    node.append(
      el('span', 'pill pill--you', `You ${ratio(stats.correct, n)}`),
      el('span', 'pill pill--model', `Model ${ratio(stats.model_correct, n)}`),
    );
    node.setAttribute('aria-label', scoreText(stats));
  }

  // ---------------------------------------------------------------- passage

  function clearPassage() {
    els.passage.textContent = '';
    state.rendered = { docId: null, count: 0 };
  }

  function makeSlot() {
    const slot = el('span', 'slot');
    slot.id = 'slot';
    slot.append(el('span', 'slot__ghost'), el('span', 'slot__caret'));
    slot.setAttribute('aria-hidden', 'true');
    return slot;
  }

  function renderPassage(question) {
    const ctx = Array.isArray(question.context) ? question.context.map(String) : [];
    const docId = question.document ? question.document.id : null;
    let body = els.passage.querySelector('.passage__text');
    const oldSlot = els.passage.querySelector('.slot');
    if (oldSlot) oldSlot.remove();

    // Continue the same passage without re-rendering when the new context
    // extends what is already on screen (the usual "Next" case).
    let start = 0;
    const shown = body ? body.querySelectorAll('.tok') : [];
    const count = shown.length;
    const reuse = body && state.rendered.docId === docId && count > 0 && ctx.length >= count
      && shown[count - 1].textContent === ctx[count - 1];

    if (reuse) {
      start = count;
      const revealed = body.querySelector('.tok--revealed');
      if (revealed) revealed.className = `tok tok--fresh${(count - 1) % 2 ? ' tok--b' : ''}`;
    } else {
      els.passage.textContent = '';
      body = el('p', 'passage__text');
      els.passage.appendChild(body);
      if (ctx.length === 0) body.appendChild(el('span', 'passage__start', 'Start of the passage →'));
    }

    const frag = document.createDocumentFragment();
    for (let i = start; i < ctx.length; i++) {
      const t = el('span', `tok${i % 2 ? ' tok--b' : ''}${/^\s+$/.test(ctx[i]) ? ' tok--ws' : ''}`);
      t.textContent = ctx[i];
      frag.appendChild(t);
    }
    const startMarker = body.querySelector('.passage__start');
    if (startMarker && ctx.length > 0) startMarker.remove();
    body.appendChild(frag);
    body.appendChild(makeSlot());
    state.rendered = { docId, count: ctx.length };
    scrollPassageToEnd();
  }

  function scrollPassageToEnd() {
    const p = els.passage;
    // The passage box scrolls on its own; keep its end (the slot) in view.
    requestAnimationFrame(() => {
      p.scrollTop = p.scrollHeight;
    });
  }

  function updateSlotPreview() {
    const slot = document.getElementById('slot');
    if (!slot) return;
    const ghost = slot.querySelector('.slot__ghost');
    const text = answerBox.text();
    if (state.phase !== 'question' || !els.input.value) {
      ghost.textContent = '';
      slot.classList.remove('slot--typing');
      return;
    }
    renderTokenText(ghost, text);
    ghost.removeAttribute('title');
    slot.classList.add('slot--typing');
    scrollPassageToEnd();
  }

  function fillSlotWithTarget(targetText, correct, skipped) {
    const slot = document.getElementById('slot');
    if (!slot) return;
    const t = el('span', `tok tok--revealed ${correct ? 'tok--ok' : skipped ? 'tok--skip' : 'tok--bad'}`);
    t.textContent = targetText;
    if (state.rendered.count % 2) t.classList.add('tok--b');
    slot.replaceWith(t);
    state.rendered.count += 1;
    scrollPassageToEnd();
  }

  // ---------------------------------------------------------------- question

  function renderProgress(question) {
    const answered = Number(question.answered_in_document) || 0;
    const total = Number(question.playable_in_document) || 0;
    const current = total ? Math.min(answered + 1, total) : answered + 1;
    els.progressText.textContent = total
      ? `Token ${current} of ${total} in this passage`
      : `Token ${current} in this passage`;
    els.progressBar.style.width = total ? `${Math.min(100, (answered / total) * 100)}%` : '0%';
  }

  function renderDocHead(question) {
    const doc = question.document || {};
    els.docTitle.textContent = doc.title || 'Untitled passage';
    if (doc.register) {
      els.docRegister.textContent = doc.register;
      els.docRegister.hidden = false;
    } else {
      els.docRegister.hidden = true;
    }
  }

  function showQuestion(question, stats) {
    state.question = question;
    root.dataset.itemId = String(question.item_id);
    state.clientKey = clientKey();
    hideAlert();
    els.done.hidden = true;
    els.roundCard.hidden = true;
    showPlayArea(true);
    els.reveal.hidden = true;
    els.ask.hidden = judging();
    els.judge.hidden = !judging();
    els.top.hidden = false;
    els.passage.closest('.passage-card').hidden = false;
    els.docTitle.closest('.doc-head').hidden = false;

    renderDocHead(question);
    renderProgress(question);
    renderMiniScore(stats);
    renderPassage(question);

    setPhase('question');
    const prefix = Array.isArray(question.context) ? question.context.join('') : '';
    if (judging()) {
      showJudgement(question, prefix);
    } else {
      state.widget = null;
      setFormEnabled(true);
      answerBox.reset(prefix);
      focusInput();
    }
    state.shownAt = performance.now();
  }

  /** A question of a judgement mode: the pair to judge, or the bets to place. */
  function showJudgement(question, prefix) {
    const mode = state.answerMode;
    const words = MODE_WORDS[mode];
    els.judgeLabel.textContent = words.title;
    els.judgeLead.textContent = words.lead || '';
    els.judgeLead.hidden = !words.lead;
    const common = {
      onAnswer: (payload) => submitJudgement(payload, false),
      onSkip: () => submitJudgement(null, true),
    };
    if (mode === 'pairwise') {
      const pair = question.pair || {};
      state.widget = window.humanlm.pairwiseInput(els.judgeWidget, {
        left: pair.left, right: pair.right, scale: pair.scale, ...common,
      });
    } else {
      state.widget = window.humanlm.betInput(els.judgeWidget, { maxBets: 5, prefix, ...common });
    }
    setFormEnabled(true);
    state.widget.focus();
    const r = els.judge.getBoundingClientRect();
    if (r.bottom > window.innerHeight || r.top < 0) els.judge.scrollIntoView({ block: 'nearest' });
  }

  function focusInput() {
    try {
      els.input.focus({ preventScroll: true });
    } catch (_) {
      els.input.focus();
    }
    // On a phone, make sure the input (not only the passage) is on screen.
    const r = els.ask.getBoundingClientRect();
    if (r.bottom > window.innerHeight || r.top < 0) {
      els.ask.scrollIntoView({ block: 'nearest' });
    }
  }

  function setFormEnabled(on) {
    if (state.widget) state.widget.setEnabled(on);
    els.judge.classList.toggle('is-busy', !on);
    answerBox.setEnabled(on);
    els.guessBtn.disabled = !on;
    els.skipBtn.disabled = !on;
    els.ask.classList.toggle('is-busy', !on);
  }

  // ---------------------------------------------------------------- next question

  async function loadNext(newPassage) {
    if (state.phase === 'loading' || state.phase === 'submitting') return;
    const seq = ++state.nextSeq;
    setPhase('loading');
    els.newPassage.disabled = true;
    els.nextBtn.disabled = true;
    setFormEnabled(false);
    if (newPassage) {
      clearPassage();
      els.passage.appendChild(skeleton());
      els.reveal.hidden = true;
    }
    try {
      const data = await api('POST', '/api/play/next', judging()
        ? { corpus, new_passage: !!newPassage, mode: state.answerMode }
        : {
          corpus, new_passage: !!newPassage, round: true,
          daily: state.mode.daily, difficulty: state.mode.difficulty,
        });
      if (seq !== state.nextSeq) return;
      if (!data.question) {
        if (data.finished_round) {
          showRoundCard(data.finished_round, !!data.daily_done);
        } else if (data.daily_done) {
          showDone(data.stats, 'You have answered every position of today\u2019s passage already. Come back tomorrow for a new one.');
        } else if (judging()) {
          showDone(data.stats, state.answerMode === 'pairwise'
            ? 'No passage has a pair left for you to judge. Choose another way to play above.'
            : 'You have bet on every position we have. Choose another way to play above.');
        } else {
          showDone(data.stats, state.mode.difficulty !== 'any'
            ? `No ${state.mode.difficulty} positions are left for you. Choose another difficulty:`
            : null);
        }
        return;
      }
      renderRound(data.round);
      showQuestion(data.question, data.stats);
    } catch (err) {
      if (seq !== state.nextSeq) return;
      setPhase('error');
      showAlert(err.message || String(err), () => loadNext(newPassage));
      if (!state.question || els.passage.querySelector('.skeleton')) {
        // Nothing to play: keep only the message (and a way back) on screen.
        state.question = null;
        clearPassage();
        els.top.hidden = true;
        els.passage.closest('.passage-card').hidden = true;
        els.ask.hidden = true;
        els.judge.hidden = true;
        els.reveal.hidden = true;
      }
      els.alertRetry.focus();
    } finally {
      if (seq === state.nextSeq) {
        els.newPassage.disabled = false;
        els.nextBtn.disabled = false;
      }
    }
  }

  function skeleton() {
    const s = el('div', 'skeleton');
    s.setAttribute('aria-hidden', 'true');
    s.append(el('span'), el('span'), el('span'));
    return s;
  }

  function showDone(stats, lead) {
    setPhase('done');
    els.roundCard.hidden = true;
    if (lead) els.done.querySelector('.done__lead').textContent = lead;
    if (lead) $('done-title').textContent = 'Nothing left here';
    state.question = null;
    hideAlert();
    els.ask.hidden = true;
    els.judge.hidden = true;
    els.reveal.hidden = true;
    els.top.hidden = true;
    els.passage.closest('.passage-card').hidden = true;
    renderScoreInto(els.doneScore, stats);
    // With a difficulty chosen, the switch stays on screen to choose another (without the last
    // passage's title: the page's one level-one heading is then the "done" card's).
    if (state.mode.difficulty !== 'any' && !state.mode.daily) els.top.hidden = false;
    els.docTitle.closest('.doc-head').hidden = true;
    els.done.hidden = false;
    const link = els.done.querySelector('a');
    if (link) link.focus();
  }

  // ---------------------------------------------------------------- guessing

  async function submitGuess(skip) {
    if (state.phase !== 'question' || !state.question) return;
    if (judging()) {
      if (skip) submitJudgement(null, true);
      return;
    }
    const typed = els.input.value;
    if (!skip && typed.length === 0) {
      answerBox.message('Type a guess first, or choose “I don\u2019t know”.', true);
      els.input.focus();
      els.ask.classList.remove('shake');
      void els.ask.offsetWidth; // restart the animation
      els.ask.classList.add('shake');
      return;
    }
    const reactionMs = Math.max(0, performance.now() - state.shownAt);
    const body = {
      item_id: state.question.item_id,
      text: skip ? '' : answerBox.text(),
      skipped: !!skip,
      client_key: state.clientKey,
      reaction_ms: Math.round(reactionMs * 10) / 10,
    };
    answerBox.stop(); // no token split arrives after this: the answer is about to be shown

    setPhase('submitting');
    setFormEnabled(false);
    els.newPassage.disabled = true;
    hideAlert();
    const label = skip ? els.skipBtn : els.guessBtn;
    label.classList.add('is-loading');

    try {
      const data = await postGuessWithRetry(body);
      showReveal(data, body.client_key);
    } catch (err) {
      setPhase('question');
      setFormEnabled(true);
      showAlert(err.message || String(err));
      els.input.focus();
    } finally {
      label.classList.remove('is-loading');
      els.newPassage.disabled = false;
    }
  }

  /** Send a judgement (the widget's payload) or a skip, then show the reveal. */
  async function submitJudgement(payload, skip) {
    if (state.phase !== 'question' || !state.question || !judging()) return;
    const reactionMs = Math.max(0, performance.now() - state.shownAt);
    const body = {
      item_id: state.question.item_id,
      client_key: state.clientKey,
      mode: state.answerMode,
      reaction_ms: Math.round(reactionMs * 10) / 10,
      ...(skip ? { skipped: true } : payload),
    };
    setPhase('submitting');
    setFormEnabled(false);
    els.newPassage.disabled = true;
    hideAlert();
    const widget = state.widget;
    const busy = els.judge.querySelector(skip ? '.judge-skip' : '.judge-submit');
    if (busy) busy.classList.add('is-loading');
    try {
      const data = await postGuessWithRetry(body);
      showReveal(data, body.client_key);
    } catch (err) {
      setPhase('question');
      setFormEnabled(true);
      if (widget) {
        widget.message(err.message || String(err), true);
        widget.focus();
      }
    } finally {
      if (busy) busy.classList.remove('is-loading');
      els.newPassage.disabled = false;
    }
  }

  async function postGuessWithRetry(body) {
    let lastErr = null;
    for (let attempt = 0; attempt <= GUESS_RETRY_DELAYS_MS.length; attempt++) {
      try {
        return await api('POST', '/api/play/guesses', body);
      } catch (err) {
        lastErr = err;
        // Only a network failure is retried, with the SAME client_key, so the
        // server stores the guess exactly once.
        if (!(err instanceof ApiError) || !err.network || attempt === GUESS_RETRY_DELAYS_MS.length) throw err;
        if (judging() && state.widget) state.widget.message('Connection trouble, retrying…', true);
        else answerBox.message('Connection trouble, retrying…', true);
        await sleep(GUESS_RETRY_DELAYS_MS[attempt]);
      }
    }
    throw lastErr;
  }

  // ---------------------------------------------------------------- reveal

  function showReveal(data, key) {
    const guess = data.guess || {};
    const target = data.target || { text: '' };
    const model = data.model || {};
    const skipped = !!guess.skipped;
    let correct = !!guess.correct && !skipped;
    // A judgement's reply says its mode (a skipped bet carries no `distribution` part).
    const judged = data.pairwise ? 'pairwise'
      : (data.distribution || data.mode === 'distribution') ? 'distribution' : null;

    setPhase('reveal');
    state.revealedAt = performance.now();
    els.ask.hidden = true;
    els.judge.hidden = true;
    state.widget = null;
    const tc = chip(target.text, 'chip--target chip--lg');
    tc.id = 'target-chip';
    els.targetChip.replaceWith(tc);
    els.targetChip = tc;
    els.yourGuess.hidden = !!judged;
    els.judgeResult.hidden = !judged;

    let tone = correct ? 'ok' : skipped ? 'skip' : 'bad';
    let tallyAwaitsModel = false;
    if (judged) {
      const result = renderJudgementReveal(data, judged, skipped);
      tone = result.tone;
      correct = tone === 'ok';
      // counted in the tab's tally without the model's number: added when it arrives
      tallyAwaitsModel = !data.replayed && !skipped && result.you !== null && !known(result.model);
    } else {
      // A skip is no wrong answer: its own mark, colour and words.
      els.verdictMark.textContent = correct ? '✓' : skipped ? '?' : '✗';
      els.verdictTitle.textContent = correct
        ? pickPraise(model)
        : skipped ? 'Skipped: no answer this time'
          : (guess.match_rule === 'first_token_if_space_toggled' ? 'So close!' : 'Not quite');
    }
    els.reveal.classList.remove('is-ok', 'is-bad', 'is-skip');
    els.reveal.classList.add(`is-${tone}`);

    // The player's guess
    els.yourGuess.textContent = '';
    if (judged) {
      // shown by renderJudgementReveal
    } else if (skipped) {
      els.yourGuess.append('You chose “I don\u2019t know”.');
    } else {
      els.yourGuess.append('You guessed ');
      const first = guess.first_token;
      const tokens = Array.isArray(guess.tokens) ? guess.tokens : [];
      if (tokens.length > 1 && first) {
        els.yourGuess.append(chip(first.text, correct ? 'chip--ok' : 'chip--guess'));
        const rest = tokens.slice(1).map((t) => t.text).join('');
        const restChip = chip(rest, 'chip--extra');
        els.yourGuess.append(restChip);
        els.yourGuess.append(el('span', 'muted', ` (${tokens.length} tokens, only the first one is scored)`));
      } else if (first) {
        els.yourGuess.append(chip(first.text, correct ? 'chip--ok' : 'chip--guess'));
      } else {
        els.yourGuess.append(chip(guess.text || '', 'chip--guess'));
      }
    }

    // Hint for near misses
    const hint = judged ? '' : hintFor(guess, target);
    els.hint.hidden = !hint;
    els.hint.textContent = hint || '';
    els.hint.classList.toggle('reveal-hint--info', !!hint && guess.match_rule !== 'first_token_if_space_toggled');

    renderBars(model, judged ? { skipped: true } : guess, target);
    els.modelLine.textContent = judged ? judgedModelLine(model) : modelLine(model, guess);

    // The end of the text with the true token, for "How other models cut this" (collapsed).
    const prefix = state.question && Array.isArray(state.question.context) ? state.question.context.join('') : '';
    cuts.set(window.humanlm.cutsText(prefix, target.text), target.text);

    renderScoreInto(els.scoreline, data.stats);
    renderMiniScore(data.stats);
    fillSlotWithTarget(target.text, tone === 'ok', tone === 'skip');

    // Progress: this token now counts as answered.
    if (state.question) {
      const q = state.question;
      const total = Number(q.playable_in_document) || 0;
      const answered = (Number(q.answered_in_document) || 0) + 1;
      if (total) els.progressBar.style.width = `${Math.min(100, (answered / total) * 100)}%`;
    }

    renderRound(data.round, true);
    state.finishedRound = data.round && data.round.finished ? data.round.id : null;
    els.nextBtn.firstChild.textContent = state.finishedRound ? 'See your result '
      : judged === 'pairwise' ? 'Next pair ' : judged ? 'Next bet ' : 'Next token ';

    els.reveal.hidden = false;
    els.nextBtn.disabled = false;
    try {
      els.nextBtn.focus({ preventScroll: true });
    } catch (_) {
      els.nextBtn.focus();
    }
    const r = els.reveal.getBoundingClientRect();
    if (r.top < 0 || r.top > window.innerHeight * 0.55) {
      els.reveal.scrollIntoView({ block: 'start', behavior: prefersReducedMotion() ? 'auto' : 'smooth' });
    }
    watchForModelNumbers(key, data, judged, tallyAwaitsModel);
  }

  // ---------------------------------------------------------------- reveal: the judgement modes

  /** Verdict, sentence and chart of a pairwise or distribution answer (humanlm.judgementResult);
   *  returns its result: the tone (ok: leaned towards / bet on what came next, bad: away from
   *  it, skip) and the probabilities you and the model put on what came next. */
  function renderJudgementReveal(data, judged, skipped) {
    const result = window.humanlm.judgementResult(els.judgeResult, {
      mode: judged, pairwise: data.pairwise, distribution: data.distribution, skipped,
      targetProb: data.model ? data.model.target_prob : null,
    });
    if (!data.replayed) addToTally(judged, result.you, result.model, skipped || result.you === null);
    els.verdictMark.textContent = result.mark;
    els.verdictTitle.textContent = result.title;
    return result;
  }

  /** Below the model's chart in the judgement modes: the true token's probability and its top pick. */
  function judgedModelLine(model) {
    const parts = [`The model gave what came next ${probPhrase(model.target_prob, model.target_rank, model)}.`];
    const top1 = Array.isArray(model.top) && model.top.length ? model.top[0] : null;
    if (model.top1_correct === true) parts.push('Its top pick was right.');
    else if (model.top1_correct === false && top1) parts.push(`Its top pick was ${quoteToken(top1.text)}.`);
    return parts.join(' ');
  }

  function prefersReducedMotion() {
    return window.matchMedia && window.matchMedia('(prefers-reduced-motion: reduce)').matches;
  }

  function pickPraise(model) {
    if (model && model.top1_correct === false) return 'Correct! You beat the model';
    return 'Correct!';
  }

  function hintFor(guess, target) {
    if (guess.skipped) return '';
    if (guess.match_rule === 'first_token_if_space_toggled') {
      const had = /^\s/.test(target.text || '');
      return had
        ? 'Right word, wrong space: the model\u2019s token had a leading space. Turn on “Leading space” (Alt+S) when your guess starts a new word.'
        : 'Right word, wrong space: the model\u2019s token had no leading space. Turn off “Leading space” (Alt+S) when your guess continues the previous word.';
    }
    if (guess.correct && guess.multi_token) {
      return 'Your guess was several tokens long; its first token matched, and that is what counts.';
    }
    return '';
  }

  function barRow(rankLabel, token, prob, { isTarget = false, isGuess = false, extra = false, outside = false } = {}) {
    const li = el('li', 'bar');
    if (extra) li.classList.add('bar--extra');
    if (isTarget) li.classList.add('bar--target');
    if (isGuess) li.classList.add('bar--guess');

    li.appendChild(el('span', 'bar__rank', rankLabel));
    li.appendChild(chip(token, 'chip--bar'));

    const track = el('span', 'bar__track');
    const fill = el('span', 'bar__fill');
    const p = Math.max(0, Math.min(1, Number(prob) || 0));
    fill.style.width = `${(p * 100).toFixed(2)}%`;
    track.appendChild(fill);
    const tags = el('span', 'bar__tags');
    if (isTarget) tags.appendChild(el('span', 'tag tag--target', 'true'));
    if (isGuess) tags.appendChild(el('span', 'tag tag--guess', 'you'));
    if (tags.childNodes.length) track.appendChild(tags);
    li.appendChild(track);

    li.appendChild(el('span', 'bar__pct', outside ? `<${pct(prob)}` : pct(p)));
    return li;
  }

  function renderBars(model, guess, target) {
    const top = Array.isArray(model.top) ? model.top.slice(0, 10) : [];
    const showGuess = !guess.skipped;
    els.bars.textContent = '';
    top.forEach((t, i) => {
      els.bars.appendChild(barRow(String(i + 1), t.text, t.prob, {
        isTarget: !!t.is_target,
        isGuess: showGuess && !!t.is_guess,
      }));
    });

    // The true token and the guess may lie outside the top 10: add them below
    // a gap so the player still sees where they stand.
    const extras = [];
    const known = (p) => p !== null && p !== undefined;
    if (!top.some((t) => t.is_target)) {
      const inK = known(model.target_prob);
      extras.push({
        rank: inK && model.target_rank ? model.target_rank : Infinity,
        row: barRow(inK && model.target_rank ? String(model.target_rank) : '–', target.text,
          inK ? model.target_prob : model.min_top_k_prob, { isTarget: true, extra: true, outside: !inK }),
      });
    }
    const first = guess.first_token;
    if (showGuess && first && !guess.correct && !top.some((t) => t.is_guess)) {
      const inK = known(model.guess_prob);
      extras.push({
        rank: inK && model.guess_rank ? model.guess_rank : Infinity,
        row: barRow(inK && model.guess_rank ? String(model.guess_rank) : '–', first.text,
          inK ? model.guess_prob : model.min_top_k_prob, { isGuess: true, extra: true, outside: !inK }),
      });
    }
    if (extras.length) {
      const gap = el('li', 'bar-gap', '⋯');
      gap.setAttribute('aria-hidden', 'true');
      els.bars.appendChild(gap);
      extras.sort((a, b) => a.rank - b.rank).forEach((x) => els.bars.appendChild(x.row));
    }
  }

  function probPhrase(prob, rank, model) {
    if (prob !== null && prob !== undefined) return `${pct(prob)}${rank ? ` (rank ${rank})` : ''}`;
    return `below ${pct(model.min_top_k_prob)} (outside the model\u2019s top ${model.top_k || 'k'})`;
  }

  const known = (p) => p !== null && p !== undefined;

  /** A guess the stored top-k does not hold, in plain words (its exact number is unknown). */
  function outsideTopK(model) {
    const k = model.top_k || 'k';
    const floor = known(model.min_top_k_prob) ? pct(model.min_top_k_prob) : 'very little';
    return `The model’s top ${k} did not include your answer: it gave it less than ${floor}.`;
  }

  function modelLine(model, guess) {
    const parts = [];
    const top1 = Array.isArray(model.top) && model.top.length ? model.top[0] : null;
    if (guess.skipped) {
      parts.push(`The model gave the true token ${probPhrase(model.target_prob, model.target_rank, model)}.`);
    } else if ((guess.first_token || guess.text) && !known(model.guess_prob) && !guess.correct) {
      parts.push(outsideTopK(model));
      if (model.target_rank !== 1) {
        parts.push(`It gave the true token ${probPhrase(model.target_prob, model.target_rank, model)}.`);
      }
    } else if (guess.first_token || guess.text) {
      parts.push(`The model gave your guess ${probPhrase(model.guess_prob, model.guess_rank, model)}.`);
      if (!guess.correct && model.target_rank !== 1) {
        parts.push(`It gave the true token ${probPhrase(model.target_prob, model.target_rank, model)}.`);
      }
    }
    if (model.top1_correct === true) {
      parts.push('Its top pick was right.');
    } else if (model.top1_correct === false && top1) {
      parts.push(`Its top pick, ${quoteToken(top1.text)}, was wrong.`);
    }
    return parts.join(' ');
  }

  // ---------------------------------------------------------------- reveal: numbers filled later

  // A guess or bet outside the model's stored top-k has no model number at first: the background
  // job computes it a few seconds after the answer. The reveal then asks again for the stored
  // answer (GET /api/play/guesses/<client_key>) about 4 s and 12 s after it was shown, and puts
  // the numbers in place; moving on (any phase but reveal) stops the asking.
  const REFRESH_AFTER_MS = [4000, 12000];
  const numbersNote = el('p', 'sr-only');
  numbersNote.id = 'model-numbers-note';
  numbersNote.setAttribute('aria-live', 'polite');
  els.reveal.append(numbersNote);

  /** Does a reveal still lack one of the model's numbers? */
  function lacksModelNumbers(data) {
    const guess = data.guess || {};
    if (data.pairwise) return !known(data.pairwise.model_true_probability);
    if (data.distribution) {
      return (Array.isArray(data.distribution.cells) ? data.distribution.cells : []).some((c) => !known(c.model));
    }
    if (data.mode === 'distribution' || guess.skipped || !guess.first_token) return false;
    return !known((data.model || {}).guess_prob);
  }

  function stopWatching() {
    const job = state.refresh;
    state.refresh = null;
    if (job && job.timer) clearTimeout(job.timer);
  }

  function watchForModelNumbers(key, data, judged, tallyAwaitsModel) {
    stopWatching();
    numbersNote.textContent = '';
    if (!key || !lacksModelNumbers(data)) return;
    const job = { key, judged, tallyAwaitsModel, tries: 0, timer: null, since: performance.now() };
    const current = () => state.refresh === job && state.phase === 'reveal';
    const ask = async () => {
      job.timer = null;
      if (!current()) return;
      job.tries += 1;
      let fresh = null;
      try {
        fresh = await api('GET', `/api/play/guesses/${encodeURIComponent(key)}`);
      } catch (_) {
        fresh = null; // asked again below, or the reveal keeps "not known yet"
      }
      if (!current()) return;
      if (fresh && !lacksModelNumbers(fresh)) {
        state.refresh = null;
        fillInModelNumbers(fresh, job);
        return;
      }
      if (job.tries < REFRESH_AFTER_MS.length) {
        const wait = REFRESH_AFTER_MS[job.tries] - (performance.now() - job.since);
        job.timer = setTimeout(ask, Math.max(500, wait));
      } else {
        state.refresh = null;
      }
    };
    state.refresh = job;
    job.timer = setTimeout(ask, REFRESH_AFTER_MS[0]);
  }

  /** The reveal's model numbers, now known, in place (the verdict and the player's side stay). */
  function fillInModelNumbers(data, job) {
    const model = data.model || {};
    const guess = data.guess || {};
    let said;
    if (job.judged) {
      const result = window.humanlm.judgementResult(els.judgeResult, {
        mode: job.judged, pairwise: data.pairwise, distribution: data.distribution,
        skipped: !!guess.skipped, targetProb: model.target_prob,
      });
      els.modelLine.textContent = judgedModelLine(model);
      if (job.tallyAwaitsModel && known(result.model)) {
        addModelToTally(job.judged, result.model);
        renderScoreInto(els.scoreline, data.stats);
        renderMiniScore(data.stats);
      }
      const sentence = els.judgeResult.querySelector('.judge-sentence');
      said = sentence ? sentence.textContent : '';
    } else {
      renderBars(model, guess, data.target || { text: '' });
      els.modelLine.textContent = modelLine(model, guess);
      said = `The model gave your guess ${probPhrase(model.guess_prob, model.guess_rank, model)}.`;
    }
    numbersNote.textContent = `The model’s numbers are in. ${said}`.trim();
  }

  // ---------------------------------------------------------------- rounds

  const DIFFICULTY_WORDS = { easy: 'easy positions', hard: 'hard positions' };

  /** The round line: the position being asked, or after an answer how many are answered. */
  function renderRound(round, revealing = false) {
    $('daily-link').hidden = state.mode.daily;
    if (!round) {
      const t = judging() ? readTally(state.answerMode) : null;
      els.roundText.textContent = t
        ? `${MODE_WORDS[state.answerMode].short} · ${t.n + t.skipped} answered in this tab`
        : '';
      return;
    }
    if (revealing && !round.finished) {
      els.roundText.textContent = `${round.kind === 'daily' ? 'Today\u2019s passage' : 'Round'}: ${round.answered} of ${round.size} answered`;
      return;
    }
    const at = Math.min(round.answered + (round.finished ? 0 : 1), round.size);
    const kind = round.kind === 'daily'
      ? 'Today\u2019s passage'
      : `Round${DIFFICULTY_WORDS[round.difficulty] ? ` of ${DIFFICULTY_WORDS[round.difficulty]}` : ''}`;
    els.roundText.textContent = round.finished
      ? `${kind}: all ${round.size} answered`
      : `${kind}: ${at} of ${round.size}`;
  }

  function showPlayArea(on) {
    els.top.hidden = !on;
    els.passage.closest('.passage-card').hidden = !on;
  }

  async function showRoundCard(roundId, alreadyPlayed) {
    setPhase('loading');
    let data;
    let daily = null;
    try {
      [data, daily] = await Promise.all([
        api('GET', `/api/play/rounds/${encodeURIComponent(roundId)}`),
        api('GET', '/api/play/daily').catch(() => null),
      ]);
    } catch (err) {
      setPhase('error');
      showAlert(err.message || String(err), () => showRoundCard(roundId, alreadyPlayed));
      return;
    }
    const r = data.result;
    setPhase('result');
    state.finishedRound = null;
    hideAlert();
    els.ask.hidden = true;
    els.reveal.hidden = true;
    els.done.hidden = true;
    showPlayArea(false);

    $('round-kicker').textContent = r.kind === 'daily'
      ? `Today\u2019s passage · ${r.day}${r.passage ? ` · ${r.passage}` : ''}`
      : `Round of ${r.size}${DIFFICULTY_WORDS[r.difficulty] ? ` · ${DIFFICULTY_WORDS[r.difficulty]}` : ''}`;
    const n = r.answered;
    $('round-title').textContent = alreadyPlayed
      ? 'You played today\u2019s passage'
      : r.you_correct > r.model_correct ? 'You beat the model!'
        : r.you_correct === r.model_correct ? 'A draw with the model' : 'The model won this round';
    $('rc-you').textContent = `${r.you_correct}/${n}`;
    $('rc-model').textContent = `${r.model_correct}/${n}`;
    $('rc-model-name').textContent = r.model_name || modelName;

    const grid = $('rc-grid');
    grid.textContent = '';
    const row = (who, marks) => {
      const line = el('div', 'rc-grid__row');
      line.append(el('span', 'rc-grid__who', who));
      marks.forEach((m) => line.append(el('span', `rc-cell rc-cell--${m}`)));
      return line;
    };
    grid.append(
      row('You', r.calls.map((c) => c.you)),
      row('Model', r.calls.map((c) => (c.model_right ? 'right' : 'wrong'))),
    );
    const rights = r.calls.filter((c) => c.you === 'right').length;
    grid.setAttribute('aria-label', `You were right on ${rights} of ${n} tokens, the model on ${r.model_correct}`);

    const best = $('rc-best');
    const worst = $('rc-worst');
    best.textContent = '';
    worst.textContent = '';
    best.hidden = !r.best;
    worst.hidden = !r.worst;
    if (r.best) {
      best.append(el('strong', null, 'Best call: '), chip(r.best.target, 'chip--ok'),
        // "only" when the model thought it unlikely; a best call the model also saw is not one
        ` \u2014 the model gave it ${r.best.target_prob < 0.5 ? 'only ' : ''}${pct(r.best.target_prob)}.`);
    }
    if (r.worst) {
      worst.append(el('strong', null, 'Worst call: '), chip(r.worst.target, 'chip--target'),
        ` \u2014 the model gave it ${pct(r.worst.target_prob)}; you `);
      if (r.worst.you === 'skip') worst.append('skipped it.');
      else worst.append('said ', chip(r.worst.guess || '', 'chip--guess'), '.');
    }

    const streak = daily && daily.streak;
    const streakLine = $('rc-streak');
    streakLine.hidden = !streak || !streak.days;
    if (streak && streak.days) {
      streakLine.textContent = streak.days === 1
        ? 'Streak: 1 day. Play tomorrow to make it 2.'
        : `Streak: ${streak.days} days in a row.`;
    }

    $('share-text').textContent = data.share_text;
    $('card-link').href = data.card_url;
    $('copy-status').textContent = '';

    renderBoard(r.kind === 'daily' ? daily : null);
    $('rc-daily').hidden = r.kind === 'daily';
    els.roundCard.hidden = false;
    const again = $('another-round');
    try {
      again.focus({ preventScroll: true });
    } catch (_) {
      again.focus();
    }
    window.scrollTo(0, 0);
  }

  function renderBoard(daily) {
    const box = $('daily-board');
    box.hidden = !daily;
    if (!daily) return;
    const list = $('board-list');
    list.textContent = '';
    const entries = daily.board.entries || [];
    $('board-empty').hidden = entries.length > 0;
    entries.forEach((e) => {
      const li = el('li', `board__row${e.you ? ' board__row--you' : ''}`);
      li.append(el('span', 'board__rank', String(e.rank)), el('span', 'board__name', e.name),
        el('span', 'board__score', `${e.correct}/${e.answered}`));
      if (e.you) li.append(el('span', 'tag tag--guess', 'you'));
      list.append(li);
    });
    const input = $('nickname-input');
    if (daily.nickname && !input.value) input.value = daily.nickname;
  }

  $('nickname-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const msg = $('nickname-msg');
    const input = $('nickname-input');
    try {
      const data = await api('POST', '/api/play/nickname', { nickname: input.value });
      input.value = data.nickname;
      input.removeAttribute('aria-invalid');
      msg.textContent = `Saved: the board calls you ${data.nickname}.`;
      renderBoard(await api('GET', '/api/play/daily'));
    } catch (err) {
      input.setAttribute('aria-invalid', 'true');
      const text = String(err.message || err);
      msg.textContent = text.charAt(0).toUpperCase() + text.slice(1);
    }
  });

  $('copy-result').addEventListener('click', async () => {
    const text = $('share-text').textContent;
    const status = $('copy-status');
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = 'Copied: paste it anywhere.';
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents($('share-text'));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      status.textContent = 'Selected: press Ctrl+C (or \u2318C) to copy.';
    }
  });

  $('another-round').addEventListener('click', () => {
    els.roundCard.hidden = true;
    state.mode.daily = false;
    showPlayArea(true);
    clearPassage();
    els.passage.appendChild(skeleton());
    setPhase('idle');
    loadNext(true);
  });

  els.modeRadios.forEach((radio) => radio.addEventListener('change', () => {
    if (!radio.checked || radio.value === state.answerMode) return;
    if (state.phase === 'submitting' || state.phase === 'loading') {
      applyMode(state.answerMode); // not while an answer is on its way: the choice snaps back
      return;
    }
    applyMode(radio.value);
    rememberMode(radio.value);
    if (radio.value === 'token') {
      state.mode = { daily: false, difficulty: els.difficulty.value };
    }
    els.roundCard.hidden = true;
    els.done.hidden = true;
    showPlayArea(true);
    setPhase('idle');
    loadNext(false);
  }));

  els.difficulty.addEventListener('change', () => {
    if (state.phase === 'submitting' || state.phase === 'loading') return;
    state.mode = { daily: false, difficulty: els.difficulty.value };
    els.roundCard.hidden = true;
    els.done.hidden = true;
    showPlayArea(true);
    loadNext(true);
  });

  // ---------------------------------------------------------------- events

  els.form.addEventListener('submit', (e) => {
    e.preventDefault();
    submitGuess(false);
  });

  els.skipBtn.addEventListener('click', () => submitGuess(true));


  /** Next from the reveal: the next position, or the result card when the round is over. */
  function goNext() {
    if (state.phase === 'reveal' && state.finishedRound) {
      showRoundCard(state.finishedRound, false);
      return;
    }
    loadNext(false);
  }

  els.nextBtn.addEventListener('click', () => {
    if (state.phase !== 'reveal' && state.phase !== 'error') return;
    goNext();
  });

  els.newPassage.addEventListener('click', () => {
    if (state.phase === 'submitting' || state.phase === 'loading') return;
    loadNext(true);
  });

  // A held-down Enter must not race through guess -> reveal -> next question.
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && e.repeat && state.phase !== 'question') e.preventDefault();
  }, true);

  document.addEventListener('keydown', (e) => {
    if (e.defaultPrevented || e.isComposing) return;
    const key = e.key;
    const inField = e.target === els.input;

    // Alt+S (the leading-space switch) is handled by the answer box, humanlm.guessInput.
    if (e.altKey && !e.ctrlKey && !e.metaKey && (e.code === 'KeyN' || key === 'n' || key === 'N')) {
      e.preventDefault();
      if (state.phase !== 'submitting' && state.phase !== 'loading') loadNext(true);
      return;
    }

    if (state.phase === 'question') {
      if (key === 'Escape' || (key === 'Enter' && (e.ctrlKey || e.metaKey))) {
        e.preventDefault();
        submitGuess(true);
        return;
      }
      if (judging()) {
        // The widget handles its own keys; 1-9 pick a stop of the pair from anywhere on the page.
        const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement
          || e.target instanceof HTMLSelectElement;
        if (state.answerMode === 'pairwise' && state.widget && !typing && /^[1-9]$/.test(key)
            && !e.ctrlKey && !e.metaKey && !e.altKey) {
          e.preventDefault();
          state.widget.choose(Number(key) * 10);
        }
        return;
      }
      // Typing anywhere on the page goes into the guess box.
      if (!inField && key.length === 1 && !e.ctrlKey && !e.metaKey && !e.altKey
          && !(e.target instanceof HTMLInputElement) && !(e.target instanceof HTMLTextAreaElement)
          && !(e.target instanceof HTMLButtonElement && key === ' ')) {
        els.input.focus();
      }
      return;
    }

    if (state.phase === 'reveal' && key === 'Enter' && !e.repeat) {
      // A focused button, link or summary (the cuts' disclosure) handles Enter itself.
      const t = e.target;
      if (t instanceof HTMLButtonElement || t instanceof HTMLAnchorElement || (t && t.tagName === 'SUMMARY')) return;
      e.preventDefault();
      goNext();
    }
  });

  // ---------------------------------------------------------------- go

  applyMode(initialMode());
  setPhase('idle');
  loadNext(false);
})();

/* humanlm: a participant's study pages (task and end). Plain ES2020, no dependencies.
 *
 * The task page asks the server for the participant's current item, shows the text before it,
 * and sends the answer; the server stores it before replying, so a reload (or a lost
 * connection) resumes at the next unanswered item. Nothing about the true continuation reaches
 * this page unless the study shows feedback, and then only after the answer is stored.
 */
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ end page: code and redirect
  document.querySelectorAll('[data-copy-text]').forEach((btn) => {
    btn.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(btn.dataset.copyText);
        btn.textContent = 'Copied';
      } catch (_) {
        btn.textContent = 'Select the code to copy it';
      }
    });
  });
  // One redirect, announced: the note (a live region, empty in the HTML) says it once, a
  // visible countdown runs beside it (hidden from screen readers, so they hear it once), "Stay on
  // this page" stops it, and the page leaves exactly once. Without JavaScript: the Continue link.
  const note = $('redirect-note');
  if (note && note.dataset.redirect) {
    const target = note.dataset.redirect;
    let left = Number(note.dataset.seconds || 5);
    const shown = document.createElement('span');
    shown.id = 'redirect-seconds';
    shown.setAttribute('aria-hidden', 'true');
    shown.textContent = String(left);
    const spoken = document.createElement('span');
    spoken.className = 'sr-only';
    spoken.textContent = String(left);
    note.append('Taking you back in ', shown, spoken, ' seconds.');
    const stay = $('redirect-stay');
    let timer = null;
    let gone = false;
    const leave = () => {
      if (gone) return;
      gone = true;
      clearInterval(timer);
      window.location.assign(target);
    };
    timer = setInterval(() => {
      left -= 1;
      shown.textContent = String(Math.max(left, 0));
      if (left <= 0) leave();
    }, 1000);
    if (stay) {
      stay.hidden = false;
      stay.addEventListener('click', () => {
        clearInterval(timer);
        stay.hidden = true;
        note.textContent = 'You are staying on this page. Press Continue when you are ready.';
      });
    }
    const link = $('redirect-link');
    if (link) link.addEventListener('click', () => { gone = true; clearInterval(timer); });
  }

  // ------------------------------------------------------------------ task page
  const root = $('study');
  if (!root) return;

  const els = {
    alert: $('alert'), alertMessage: $('alert-message'), alertRetry: $('alert-retry'),
    progressText: $('progress-text'), progressBar: $('progress-bar'), passage: $('passage'),
    ask: $('ask'), form: $('answer-form'), input: $('answer-input'), button: $('answer-btn'),
    skip: $('skip-btn'), confidence: $('confidence'),
    confidenceOut: $('confidence-out'), formError: $('form-error'),
    feedback: $('feedback'), feedbackTitle: $('feedback-title'), feedbackLine: $('feedback-line'),
    feedbackModel: $('feedback-model'), continueBtn: $('continue-btn'),
    judge: $('judge'), judgeWidget: $('judge-widget'), feedbackJudge: $('feedback-judge'),
  };
  const mode = root.dataset.mode;
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || '';
  const RETRY_MS = [500, 1500, 3000, 6000];

  const state = {
    phase: 'loading', // loading | question | sending | feedback | done | error
    question: null,
    next: null, // the reply after an answer: the next state, shown after the feedback
    clientKey: null,
    shownAt: 0,
    touched: false,
    widget: null, // pairwise and distribution questions: the widget of judgements.js
  };

  /** A question answered with a judgement widget (a check in such a study is a typed word). */
  const judging = (q) => !!q && (q.mode === 'pairwise' || q.mode === 'distribution') && !!els.judge;

  const { sleep, clientKey, pct, chip } = window.humanlm;
  const api = (method, url, body) => window.humanlm.api(method, url, body, {
    csrfToken: csrf,
    networkMessage: 'Could not reach the server. Check your connection; your answers so far are saved.',
  });

  // Token mode: the answer box of the solo game (leading-space switch, Alt+S, live token split).
  // Word mode: a plain box; the server adds the space a word needs.
  const answerBox = mode === 'token'
    ? window.humanlm.guessInput(els.ask, {
      isActive: () => state.phase === 'question',
      onChange: () => { els.formError.hidden = true; },
    })
    : null;

  function setPhase(phase) {
    state.phase = phase;
    root.dataset.state = phase;
    root.setAttribute('aria-busy', phase === 'loading' || phase === 'sending' ? 'true' : 'false');
  }

  function showError(message, retry) {
    els.alertMessage.textContent = message;
    els.alert.hidden = false;
    els.alertRetry.hidden = !retry;
    els.alertRetry.onclick = () => { els.alert.hidden = true; retry(); };
  }

  function renderProgress(answered, total, shown = Math.min(answered + 1, total)) {
    els.progressText.textContent = total ? `Question ${shown} of ${total}` : '';
    els.progressBar.style.width = total ? `${(100 * answered) / total}%` : '0%';
  }

  function renderQuestion(reply) {
    const q = reply.question;
    state.question = q;
    state.clientKey = clientKey();
    state.touched = false;
    renderProgress(reply.answered, reply.total);

    els.passage.textContent = '';
    const text = document.createElement('span');
    text.className = 'sp-passage__prefix';
    text.textContent = q.context;
    const slot = document.createElement('span');
    slot.className = 'slot sp-slot';
    slot.setAttribute('aria-hidden', 'true');
    slot.innerHTML = '<span class="slot__caret"></span>';
    els.passage.append(text, slot);
    els.passage.scrollTop = els.passage.scrollHeight;

    if (judging(q)) {
      showJudgement(q);
      return;
    }
    state.widget = null;
    if (els.judge) els.judge.hidden = true;
    els.input.value = '';
    els.formError.hidden = true;
    if (els.confidence) {
      els.confidence.value = '50';
      els.confidenceOut.textContent = '–';
      els.confidence.classList.remove('is-touched');
    }
    els.feedback.hidden = true;
    els.ask.hidden = false;
    els.input.disabled = false;
    els.button.disabled = false;
    if (els.skip) els.skip.disabled = false;
    setPhase('question');
    if (answerBox) answerBox.reset(q.context);
    els.input.focus({ preventScroll: true });
    state.shownAt = performance.now();
  }

  /** A pairwise or distribution question: the shared widget in place of the text box. */
  function showJudgement(q) {
    els.feedback.hidden = true;
    els.ask.hidden = true;
    els.judge.hidden = false;
    const options = {
      onAnswer: (payload) => sendJudgement(payload, false),
      onSkip: q.allow_skip ? () => sendJudgement(null, true) : null,
    };
    state.widget = q.mode === 'pairwise'
      ? window.humanlm.pairwiseInput(els.judgeWidget, { ...(q.pair || {}), ...options })
      : window.humanlm.betInput(els.judgeWidget, { maxBets: 5, prefix: q.context, ...options });
    if (q.mode === 'pairwise' && !q.pair) {
      state.widget.setEnabled(false);
      state.widget.message('This question has no pair to show. Reload the page; if it stays, tell the researcher.', true);
    }
    setPhase('question');
    state.widget.focus();
    state.shownAt = performance.now();
  }

  function goDone(url) {
    setPhase('done');
    window.location.assign(url || root.dataset.doneUrl);
  }

  function renderState(reply) {
    if (reply.finished || !reply.question) {
      goDone(reply.done_url);
    } else {
      renderQuestion(reply);
    }
  }

  async function load() {
    setPhase('loading');
    try {
      renderState(await api('GET', root.dataset.currentUrl));
    } catch (err) {
      if (err.status === 409 && err.data && err.data.done_url) return goDone(err.data.done_url);
      setPhase('error');
      showError(err.message, load);
    }
  }

  function formError(message) {
    els.formError.textContent = message;
    els.formError.hidden = false;
  }

  async function send(skipped) {
    if (state.phase !== 'question' || judging(state.question)) return;
    const typed = els.input.value;
    const qmode = (state.question && state.question.mode) || mode;
    if (!skipped && !typed.trim()) {
      formError(qmode === 'word' ? 'Type a word first (or choose “I don\'t know”).' : 'Type your answer first.');
      els.input.focus();
      return;
    }
    let probability = null;
    if (els.confidence && !skipped) {
      if (!state.touched) {
        formError('Move the slider to say how likely your answer is to be right (tap or click it to keep 50%).');
        els.confidence.focus();
        return;
      }
      probability = Number(els.confidence.value) / 100;
    }
    let text = typed;
    if (answerBox) text = answerBox.text();
    if (qmode === 'word') text = typed.trim();
    const body = {
      study_item_id: state.question.study_item_id,
      client_key: state.clientKey,
      text: skipped ? '' : text,
      skipped: !!skipped,
      reaction_ms: Math.round(performance.now() - state.shownAt),
    };
    if (probability !== null) body.reported_probability = probability;

    setPhase('sending');
    if (answerBox) answerBox.stop();
    els.formError.hidden = true;
    els.input.disabled = true;
    els.button.disabled = true;
    if (els.skip) els.skip.disabled = true;
    els.button.classList.add('is-loading');
    try {
      const reply = await post(body);
      els.button.classList.remove('is-loading');
      if (reply.feedback) {
        showFeedback(reply.feedback, reply);
      } else {
        renderState(reply);
      }
    } catch (err) {
      els.button.classList.remove('is-loading');
      if (err.status === 409) return load(); // answered elsewhere or already finished: resync
      setPhase('question');
      els.input.disabled = false;
      els.button.disabled = false;
      if (els.skip) els.skip.disabled = false;
      formError(err.message);
    }
  }

  /** POST an answer; network trouble sends the same answer again (same client key, stored once). */
  async function post(body) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await api('POST', root.dataset.answerUrl, body);
      } catch (err) {
        if (err.status === 0 && attempt < RETRY_MS.length) { await sleep(RETRY_MS[attempt]); continue; }
        throw err;
      }
    }
  }

  /** Send the widget's payload ({left_probability} or {bets, else_points}) or a skip. */
  async function sendJudgement(payload, skipped) {
    if (state.phase !== 'question' || !judging(state.question) || !state.widget) return;
    const widget = state.widget;
    const body = {
      study_item_id: state.question.study_item_id,
      client_key: state.clientKey,
      reaction_ms: Math.round(performance.now() - state.shownAt),
      ...(skipped ? { skipped: true } : payload),
    };
    setPhase('sending');
    widget.setEnabled(false);
    widget.message('');
    try {
      const reply = await post(body);
      if (reply.feedback) showFeedback(reply.feedback, reply);
      else renderState(reply);
    } catch (err) {
      if (err.status === 409) return load(); // answered elsewhere or already finished: resync
      setPhase('question');
      widget.setEnabled(true);
      widget.message(err.message, true);
      widget.focus();
    }
  }

  function showFeedback(fb, reply) {
    state.next = reply;
    renderProgress(reply.answered, reply.total, reply.answered);
    els.ask.hidden = true;
    if (els.judge) els.judge.hidden = true;
    els.feedback.hidden = false;
    els.feedback.classList.remove('is-ok', 'is-bad', 'is-skip');
    let tone = fb.skipped ? 'skip' : fb.correct ? 'ok' : 'bad';
    let title = fb.skipped ? 'Skipped' : fb.correct ? 'Right!' : 'Not this time';
    const judged = fb.pairwise ? 'pairwise' : fb.distribution || judging(state.question) ? state.question.mode : null;
    if (els.feedbackJudge) els.feedbackJudge.hidden = !judged;
    if (judged) {
      // the participant's numbers beside the model's on the same question
      const result = window.humanlm.judgementResult(els.feedbackJudge, {
        mode: judged, pairwise: fb.pairwise, distribution: fb.distribution, skipped: !!fb.skipped,
      });
      tone = result.tone;
      title = fb.skipped ? 'Skipped' : result.title;
    }
    els.feedback.classList.add(`is-${tone}`);
    els.feedbackTitle.textContent = title;
    els.feedbackLine.textContent = '';
    els.feedbackLine.append('The text continued with ');
    els.feedbackLine.append(chip(fb.target, 'chip--target'));
    if (fb.near_miss) els.feedbackLine.append(' (your answer differed only by the space before it)');
    els.feedbackModel.textContent = fb.model_top
      ? `The language model's first choice was “${fb.model_top.text}” (${pct(fb.model_top.prob)}).`
      : '';
    setPhase('feedback');
    els.continueBtn.focus();
  }

  els.form.addEventListener('submit', (e) => { e.preventDefault(); send(false); });
  if (els.skip) els.skip.addEventListener('click', () => send(true));
  if (els.confidence) {
    // The slider starts at 50% but unanswered: any deliberate touch answers it, including one
    // that leaves it at 50% (a click or tap on the slider, an arrow, Home/End/Page keys or Space),
    // so 50% needs no moving away and back. Tab into it and out again does not count.
    const touch = () => {
      state.touched = true;
      els.confidence.classList.add('is-touched');
      els.confidenceOut.textContent = `${els.confidence.value}%`;
      els.formError.hidden = true;
    };
    const KEYS = new Set(['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown', 'Home', 'End',
      'PageUp', 'PageDown', ' ']);
    els.confidence.addEventListener('input', touch);
    els.confidence.addEventListener('change', touch);
    els.confidence.addEventListener('pointerdown', touch);
    els.confidence.addEventListener('click', touch);
    els.confidence.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') { e.preventDefault(); send(false); return; }
      if (KEYS.has(e.key)) {
        if (e.key === ' ') e.preventDefault(); // Space keeps the value (and does not scroll)
        touch();
      }
    });
  }
  els.continueBtn.addEventListener('click', () => { if (state.next) renderState(state.next); });
  els.input.addEventListener('input', () => { els.formError.hidden = true; });

  document.addEventListener('keydown', (e) => {
    if (e.defaultPrevented) return; // a widget handled it
    if (e.key === 'Escape' && state.phase === 'question' && judging(state.question)) {
      if (state.question.allow_skip) { e.preventDefault(); sendJudgement(null, true); }
    } else if (e.key === 'Escape' && state.phase === 'question' && els.skip) {
      e.preventDefault();
      send(true);
    } else if (e.key === 'Enter' && state.phase === 'feedback' && document.activeElement !== els.continueBtn) {
      e.preventDefault();
      els.continueBtn.click();
    }
  });

  load();
})();

/* humanlm: a student's phone in a classroom room. Plain ES2020, no build step.
 *
 * Protocol: docs/rooms-protocol.md. The player token lives in localStorage["humanlm.player.<CODE>"];
 * on every (re)connect this page sends rejoin with it, so a reload keeps the same player and answer.
 * Token texts always go through textContent, never innerHTML.
 */
'use strict';

(() => {
  const root = document.getElementById('student');
  if (!root) return;

  const $ = (id) => document.getElementById(id);
  const ACK_TIMEOUT_MS = 8000;
  const GUESS_RETRIES = 4;
  const modelName = root.dataset.modelName || 'the model';

  const els = {
    meBar: $('me-bar'),
    meCode: $('me-code'),
    meName: $('me-name'),
    mePoints: $('me-points'),
    conn: $('conn'),
    toast: $('toast'),
    toastMessage: $('toast-message'),
    toastClose: $('toast-close'),
    joinForm: $('join-form'),
    joinCode: $('join-code'),
    joinName: $('join-name'),
    joinError: $('join-error'),
    joinBtn: $('join-btn'),
    waitTitle: $('wait-title'),
    waitCount: $('wait-count'),
    roundLabel: $('s-round-label'),
    countdown: $('s-countdown'),
    prefix: $('s-prefix'),
    ask: $('s-ask'),
    form: $('guess-form'),
    input: $('guess-input'),
    guessBtn: $('guess-btn'),
    skipBtn: $('skip-btn'),
    guessError: $('guess-error'),
    judgeBox: $('judge-box'),
    fbJudge: $('fb-judge'),
    fbFacts: $('fb-facts'),
    endCorrectLabel: $('end-correct-label'),
    endClassDetail: $('end-class-detail'),
    endModelDetail: $('end-model-detail'),
    sent: $('s-sent'),
    sentTitle: $('s-sent-title'),
    sentAnswer: $('s-sent-answer'),
    sentWait: $('s-sent-wait'),
    feedback: $('feedback'),
    fbMark: $('fb-mark'),
    fbTitle: $('fb-title'),
    fbRound: $('fb-round'),
    fbYour: $('fb-your'),
    fbTarget: $('fb-target'),
    fbModelRow: $('fb-model-row'),
    fbModelLabel: $('fb-model-label'),
    fbModel: $('fb-model'),
    fbTargetProbRow: $('fb-target-prob-row'),
    fbTargetProbLabel: $('fb-target-prob-label'),
    fbTargetProb: $('fb-target-prob'),
    fbWhy: $('fb-why'),
    fbTop1: $('fb-top1'),
    fbPoints: $('fb-points'),
    fbTotal: $('fb-total'),
    fbRank: $('fb-rank'),
    fbRankLabel: $('fb-rank-label'),
    fbClass: $('fb-class'),
    fbNone: $('fb-none'),
    fbNoneText: $('fb-none-text'),
    endTitle: $('end-title'),
    endPoints: $('end-points'),
    endRank: $('end-rank'),
    endRankLabel: $('end-rank-label'),
    endCorrect: $('end-correct'),
    endClass: $('end-class'),
    endModel: $('end-model'),
    endNote: $('end-note'),
    removedText: $('removed-text'),
    rejoinBtn: $('rejoin-btn'),
  };

  const S = {
    code: normalizeCode(root.dataset.code || ''),
    token: null,
    playerId: null,
    nickname: '',
    state: null,        // last StudentState (personal parts kept below)
    answered: false,
    myAnswer: null,     // {text, skipped}
    sentTokens: null,   // tokens of my answer from the guess ack
    feedback: {},       // round index -> Feedback
    shownRound: null,   // round index whose question is on screen
    shownAt: 0,
    sending: false,
    joining: false,
    widget: null,       // the judgement widget of the round on screen (static/js/judgements.js)
  };

  // ---------------------------------------------------------------- helpers

  const {
    el, renderTokenText, chip, tokenText, pct, wholePct, capital, sleep, quoteToken, clientKey,
    showScreen, emitWithAck, createToast, createCountdown,
  } = window.humanlm;

  function normalizeCode(text) {
    return String(text || '').normalize('NFKC').toUpperCase().replace(/[\s\-_.]+/g, '');
  }

  const tokenKey = (code) => `humanlm.player.${code}`;
  const guessKeyName = (code, round) => `humanlm.guesskey.${code}.${round}`;

  function store(kind, key, value) {
    try {
      const s = kind === 'local' ? window.localStorage : window.sessionStorage;
      if (value === null) s.removeItem(key);
      else s.setItem(key, value);
    } catch (_) { /* storage disabled: the page still works until a reload */ }
  }

  function load(kind, key) {
    try {
      return (kind === 'local' ? window.localStorage : window.sessionStorage).getItem(key);
    } catch (_) {
      return null;
    }
  }

  /** The idempotency key of my answer to `round`: one per round, kept across a resend or reload. */
  function clientKeyFor(round) {
    const name = guessKeyName(S.code, round);
    let key = load('session', name);
    if (!key) {
      key = clientKey();
      store('session', name, key);
    }
    return key;
  }

  const call = (event, payload) => emitWithAck(socket, event, payload, ACK_TIMEOUT_MS,
    'The server did not answer in time.');
  const toast = createToast(els.toast, els.toastMessage, els.toastClose, 6000);
  const countdown = createCountdown(els.countdown);

  function setScreen(name) {
    showScreen(root, name);
    els.meBar.hidden = !S.token || name === 'join' || name === 'removed' || name === 'connecting';
  }

  // ---------------------------------------------------------------- join

  function showJoin(message) {
    stopCountdown();
    els.joinCode.value = S.code || els.joinCode.value;
    els.joinError.hidden = !message;
    els.joinError.textContent = message ? capital(message) : '';
    setScreen('join');
    const target = els.joinCode.value ? els.joinName : els.joinCode;
    try { target.focus({ preventScroll: true }); } catch (_) { target.focus(); }
  }

  async function join() {
    if (S.joining) return;
    const code = normalizeCode(els.joinCode.value);
    const nickname = els.joinName.value.trim();
    els.joinCode.value = code;
    if (!code) {
      showJoinError('Type the room code shown on the big screen.', els.joinCode);
      return;
    }
    if (!nickname) {
      showJoinError('Type a nickname.', els.joinName);
      return;
    }
    S.joining = true;
    els.joinBtn.disabled = true;
    els.joinBtn.classList.add('is-loading');
    els.joinError.hidden = true;
    const resp = await call('join', { code, nickname });
    S.joining = false;
    els.joinBtn.disabled = false;
    els.joinBtn.classList.remove('is-loading');
    if (!resp.ok) {
      // A locked room or too many tries is nobody's typo: no field is marked wrong then.
      const error = resp.error || '';
      const field = /locked|too many|already has a seat/i.test(error) ? null
        : /nick|name|called/i.test(error) ? els.joinName : /code|room/i.test(error) ? els.joinCode : null;
      showJoinError(resp.error || 'Could not join.', field);
      return;
    }
    const st = resp.state || {};
    S.code = normalizeCode(st.code || code);
    S.token = resp.player_token;
    S.playerId = resp.player_id ?? st.player_id ?? null;
    store('local', tokenKey(S.code), S.token);
    // Put the code in the address so a reload (or a phone that drops the tab) finds the token.
    const path = `/join/${encodeURIComponent(S.code)}`;
    if (window.location.pathname !== path) {
      try { window.history.replaceState(null, '', path); } catch (_) { /* ignore */ }
    }
    applyState(st, true);
  }

  function showJoinError(message, field) {
    els.joinError.textContent = capital(message);
    els.joinError.hidden = false;
    if (field) {
      field.setAttribute('aria-invalid', 'true');
      field.focus();
    }
  }

  async function rejoin() {
    if (!S.token || !S.code) return;
    const resp = await call('rejoin', { code: S.code, player_token: S.token });
    if (resp.ok) {
      S.playerId = resp.player_id ?? (resp.state && resp.state.player_id) ?? S.playerId;
      applyState(resp.state || {}, true);
      return;
    }
    if (resp.network) {
      toast(resp.error);
      return; // the next connect event tries again
    }
    // The token is no good any more (room closed, player removed, ...): start over.
    store('local', tokenKey(S.code), null);
    S.token = null;
    showJoin(resp.error || 'Please join again.');
  }

  // ---------------------------------------------------------------- state

  function applyState(st, personal) {
    if (!st || typeof st !== 'object') return;
    const prev = S.state;
    const prevRound = prev && prev.round ? prev.round.index : null;
    const round = st.round ? st.round.index : null;
    if (personal) {
      S.answered = !!st.answered;
      S.myAnswer = st.my_answer || null;
      if (st.feedback && st.feedback.round !== undefined) S.feedback[st.feedback.round] = st.feedback;
      if (!S.answered) S.sentTokens = null;
    } else if (round !== prevRound) {
      S.answered = false;
      S.myAnswer = null;
      S.sentTokens = null;
    }
    if (st.nickname) S.nickname = st.nickname;
    if (st.player_id !== undefined && st.player_id !== null) S.playerId = st.player_id;
    S.state = { ...(prev || {}), ...st };
    if (!personal) {
      // room_state has no personal parts: do not let an old copy linger.
      delete S.state.answered;
      delete S.state.my_answer;
      delete S.state.feedback;
    }
    render();
  }

  function myRow() {
    const lb = S.state && Array.isArray(S.state.leaderboard) ? S.state.leaderboard : null;
    if (!lb) return null;
    return lb.find((r) => String(r.player_id) === String(S.playerId)) || null;
  }

  function latestFeedback() {
    const keys = Object.keys(S.feedback).map(Number).sort((a, b) => b - a);
    return keys.length ? S.feedback[keys[0]] : null;
  }

  function renderMeBar() {
    const st = S.state || {};
    els.meCode.textContent = st.code || S.code;
    els.meName.textContent = S.nickname;
    const row = myRow();
    const fb = latestFeedback();
    const total = row ? row.points : fb ? fb.total_points : null;
    els.mePoints.hidden = total === null || total === undefined;
    els.mePoints.textContent = total === null || total === undefined ? '' : `${total} pts`;
  }

  function render() {
    const st = S.state;
    if (!st) return;
    renderMeBar();
    if (st.status === 'failed') {
      stopCountdown();
      els.waitTitle.textContent = 'This room could not start';
      els.waitCount.textContent = 'Your teacher will set up a new one.';
      setScreen('wait');
      return;
    }
    switch (st.phase) {
      case 'lobby': {
        stopCountdown();
        els.waitTitle.textContent = `You're in, ${S.nickname}!`;
        els.waitCount.textContent = st.status === 'preparing' ? 'The teacher\u2019s questions are being prepared.' : '';
        setScreen('wait');
        break;
      }
      case 'answering':
      case 'locked':
        renderRound(st);
        setScreen('round');
        break;
      case 'reveal':
        stopCountdown();
        renderFeedback(st);
        setScreen('feedback');
        break;
      case 'finished':
        stopCountdown();
        renderFinished(st);
        setScreen('finished');
        break;
      default:
        setScreen('connecting');
    }
  }

  // ---------------------------------------------------------------- a round

  const canAnswer = () => !!(S.state && S.state.phase === 'answering' && !S.answered && !S.sending);
  /** What this room's students answer: token (type it), pairwise (which came next?) or
   * distribution (bet 100 points). */
  const modeOf = (st) => (st && ((st.round && st.round.mode) || st.mode)) || 'token';
  const judging = (st) => modeOf(st) === 'pairwise' || modeOf(st) === 'distribution';

  // The answer box of the solo game: leading-space switch (Alt+S) and the live token split.
  const answerBox = window.humanlm.guessInput(els.ask, {
    isActive: () => canAnswer() && !judging(S.state),
    onChange: () => {
      els.guessError.hidden = true;
      updateSlot();
    },
  });

  function renderPrefix(context) {
    const box = els.prefix;
    box.textContent = '';
    const p = el('p', 'prefix__text');
    const ctx = Array.isArray(context) ? context.map(String) : [];
    if (!ctx.length) p.appendChild(el('span', 'prefix__start', 'Start of the text →'));
    ctx.forEach((t, i) => p.appendChild(el('span', `tok${i % 2 ? ' tok--b' : ''}`, t)));
    const slot = el('span', 'slot');
    slot.id = 's-slot';
    slot.setAttribute('aria-hidden', 'true');
    slot.append(el('span', 'slot__ghost'), el('span', 'slot__caret'));
    p.appendChild(slot);
    box.appendChild(p);
    requestAnimationFrame(() => { box.scrollTop = box.scrollHeight; });
  }

  function updateSlot() {
    const slot = document.getElementById('s-slot');
    if (!slot) return;
    const ghost = slot.querySelector('.slot__ghost');
    const st = S.state;
    let text = '';
    if (S.answered && S.myAnswer && !S.myAnswer.skipped) text = S.myAnswer.text || '';
    else if (st && st.phase === 'answering' && !S.answered && els.input.value) text = answerBox.text();
    slot.classList.toggle('slot--sent', S.answered || (st && st.phase !== 'answering'));
    if (!text) {
      ghost.textContent = '';
      slot.classList.remove('slot--typing');
    } else {
      renderTokenText(ghost, text);
      slot.classList.add('slot--typing');
    }
  }

  function renderRound(st) {
    const round = st.round || {};
    els.roundLabel.textContent = round.total ? `Round ${round.number} of ${round.total}` : `Round ${round.number || ''}`;
    const fresh = S.shownRound !== round.index;
    const judged = judging(st);
    if (fresh) {
      S.shownRound = round.index;
      renderPrefix(round.context);
      answerBox.reset(Array.isArray(round.context) ? round.context.join('') : '');
      els.guessError.hidden = true;
      S.shownAt = performance.now();
      makeWidget(round, judged);
    }
    els.form.hidden = judged;
    els.judgeBox.hidden = !judged;
    const answering = st.phase === 'answering';
    const canAnswer = answering && !S.answered;
    els.ask.hidden = !canAnswer;
    els.sent.hidden = canAnswer;
    setFormEnabled(canAnswer && !S.sending);
    if (canAnswer) {
      if (fresh) focusInput();
    } else {
      renderSent(st);
    }
    updateSlot();
    if (answering) startCountdown(round);
    else stopCountdown();
  }

  /** A pairwise or distribution round: the shared widget, made afresh for each round. */
  function makeWidget(round, judged) {
    if (S.widget) S.widget.destroy();
    S.widget = null;
    els.judgeBox.textContent = '';
    if (!judged) return;
    const common = { onAnswer: (value) => sendAnswer(value), onSkip: () => sendAnswer(null) };
    if (round.mode === 'pairwise' && round.pair) {
      S.widget = window.humanlm.pairwiseInput(els.judgeBox, {
        left: round.pair.left, right: round.pair.right, scale: round.pair.scale, ...common,
      });
    } else if (round.mode === 'distribution') {
      const prefix = Array.isArray(round.context) ? round.context.join('') : '';
      S.widget = window.humanlm.betInput(els.judgeBox, {
        maxBets: (round.bets && round.bets.max_bets) || 5, prefix, ...common,
      });
    } else {
      els.judgeBox.append(el('p', 'form-error-inline', 'This round has nothing to judge. Wait for the next one.'));
    }
  }

  /** My judgement in words: "70% for the left one, “␣cat”" / "60 on ␣cat, 40 on something else". */
  function describeJudgement(answer, round) {
    const out = [];
    if (answer.left_probability !== undefined && answer.left_probability !== null) {
      const v = Math.round(Number(answer.left_probability) * 100);
      const pair = (round && round.pair) || {};
      out.push(`${v}% for the left one`);
      if (pair.left) out.push(', ', chip(tokenText(pair.left), 'chip--guess'));
      return out;
    }
    const bets = Array.isArray(answer.bets) ? answer.bets : [];
    bets.forEach((b, i) => {
      const item = el('span', 's-sent__bet');
      item.append(el('strong', null, String(b.points)), ' on ', chip(b.text, 'chip--guess'));
      out.push(item);
      if (i < bets.length) out.push(' ');
    });
    const rest = el('span', 's-sent__bet');
    rest.append(el('strong', null, String(answer.else_points ?? 0)), ' on something else');
    out.push(rest);
    return out;
  }

  function renderSent(st) {
    els.sentAnswer.textContent = '';
    if (S.answered && S.myAnswer) {
      if (S.myAnswer.skipped) {
        els.sentAnswer.append('You chose “I don\u2019t know”.');
      } else if (judging(st)) {
        els.sentAnswer.append('You said ', ...describeJudgement(S.myAnswer, st.round));
      } else {
        els.sentAnswer.append('Your answer: ');
        const c = chip(S.myAnswer.text, 'chip--guess chip--lg');
        c.id = 's-my-answer';
        els.sentAnswer.append(c);
        const toks = Array.isArray(S.sentTokens) ? S.sentTokens : [];
        if (toks.length > 1) {
          els.sentAnswer.append(el('span', 'muted small s-sent__note',
            ` ${toks.length} tokens: only the first, ${quoteToken(toks[0].text)}, is scored.`));
        }
      }
    }
    if (st.phase === 'locked') {
      els.sentTitle.textContent = 'Answers are closed';
      els.sentWait.textContent = S.answered ? 'Look at the big screen: the answer comes next.' : 'You did not answer this round. Look at the big screen.';
    } else {
      els.sentTitle.textContent = S.myAnswer && S.myAnswer.skipped ? 'Skipped' : 'Answer sent ✓';
      els.sentWait.textContent = 'Waiting for the others…';
    }
  }

  function setFormEnabled(on) {
    answerBox.setEnabled(on);
    els.guessBtn.disabled = !on;
    els.skipBtn.disabled = !on;
    if (S.widget) S.widget.setEnabled(on);
  }

  function focusInput() {
    // Focus only on devices with a real keyboard: on a phone, popping the keyboard over the text hides it.
    if (window.matchMedia && window.matchMedia('(hover: none)').matches) return;
    if (S.widget) {
      S.widget.focus();
      return;
    }
    try { els.input.focus({ preventScroll: true }); } catch (_) { els.input.focus(); }
  }

  /** Send a pairwise or distribution answer (null: "I don't know") through the same path as a
   * typed one: one client key per round, resent on a lost connection. */
  function sendAnswer(value) {
    return sendGuess(value === null, value || {});
  }

  async function sendGuess(skip, judgement) {
    const st = S.state;
    if (!st || st.phase !== 'answering' || S.answered || S.sending || !st.round) return;
    const typed = els.input.value;
    const judged = judging(st);
    if (!skip && !judged && !typed.trim()) {
      els.guessError.textContent = 'Type a guess first, or tap “I don\u2019t know”.';
      els.guessError.hidden = false;
      els.input.focus();
      return;
    }
    const roundIndex = st.round.index;
    const payload = {
      code: S.code,
      round: roundIndex,
      skipped: !!skip,
      client_key: clientKeyFor(roundIndex),
      reaction_ms: Math.round(Math.max(0, performance.now() - S.shownAt) * 10) / 10,
    };
    if (judged) {
      if (!skip) Object.assign(payload, judgement);
    } else {
      payload.text = skip ? '' : answerBox.text();
    }
    S.sending = true;
    answerBox.stop();
    els.guessError.hidden = true;
    if (S.widget) S.widget.message('');
    setFormEnabled(false);
    const busyBtn = judged ? null : skip ? els.skipBtn : els.guessBtn;
    if (busyBtn) busyBtn.classList.add('is-loading');
    let resp = null;
    for (let attempt = 0; attempt <= GUESS_RETRIES; attempt++) {
      resp = await call('guess', payload);
      // A lost answer is resent with the SAME client_key: the server stores it once.
      if (resp.ok || !resp.network || attempt === GUESS_RETRIES) break;
      await sleep(500 * (attempt + 1));
    }
    S.sending = false;
    if (busyBtn) busyBtn.classList.remove('is-loading');
    if (resp.ok) {
      S.answered = true;
      const ans = resp.answer || {};
      S.myAnswer = { ...ans, text: ans.text ?? payload.text ?? '', skipped: ans.skipped ?? payload.skipped };
      S.sentTokens = Array.isArray(ans.tokens) ? ans.tokens : null;
      if (S.state && S.state.round && S.state.round.index === roundIndex) render();
      return;
    }
    const message = capital(resp.error || 'The answer was not sent.');
    if (judged && S.widget) {
      S.widget.message(message, true);
    } else {
      els.guessError.textContent = message;
      els.guessError.hidden = false;
    }
    setFormEnabled(S.state && S.state.phase === 'answering' && !S.answered);
  }

  // ---------------------------------------------------------------- countdown

  function stopCountdown() {
    countdown.stop();
  }

  function startCountdown(round) {
    const deadline = round && round.deadline ? Date.parse(round.deadline) : NaN;
    if (Number.isNaN(deadline)) stopCountdown();
    else if (!countdown.running || countdown.deadline !== deadline) countdown.start(deadline);
  }

  // ---------------------------------------------------------------- feedback

  function renderFeedback(st) {
    const round = st.round || {};
    const fb = S.feedback[round.index];
    els.feedback.hidden = !fb;
    els.fbNone.hidden = !!fb;
    if (!fb) {
      els.fbNoneText.textContent = S.answered
        ? 'Your result is on its way…'
        : 'You did not answer this round. The answer is on the big screen.';
      return;
    }
    const judged = fb.mode === 'pairwise' || fb.mode === 'distribution';
    els.fbJudge.hidden = !judged;
    els.fbFacts.hidden = judged;
    if (judged) {
      renderJudgedFeedback(fb, round);
      return;
    }
    const noAnswer = fb.answered === false;
    const skipped = !!fb.skipped || noAnswer;
    const correct = !!fb.correct && !skipped;
    markFeedback(correct, skipped);
    els.fbTitle.textContent = correct ? 'Correct!' : noAnswer ? 'No answer' : skipped ? 'Skipped' : 'Not quite';
    els.fbRound.textContent = round.total ? `Round ${round.number} of ${round.total}` : '';

    els.fbYour.textContent = '';
    if (noAnswer) {
      els.fbYour.append(el('span', 'muted', 'none this round'));
    } else if (skipped) {
      els.fbYour.append(el('span', 'muted', 'I don\u2019t know'));
    } else {
      const yours = fb.your_text ?? '';
      const c = chip(yours, correct ? 'chip--ok chip--lg' : 'chip--guess chip--lg');
      c.id = 'fb-your-chip';
      els.fbYour.append(c);
      const first = fb.your_token ? tokenText(fb.your_token) : null;
      if (first !== null && first !== yours) {
        els.fbYour.append(el('span', 'muted small fb-first', ' first token '), chip(first, 'chip--inline'));
      }
    }
    els.fbTarget.textContent = '';
    const tc = chip(tokenText(fb.target), 'chip--target chip--lg');
    tc.id = 'fb-target-chip';
    els.fbTarget.append(tc);

    // Two numbers, each named: what the model gave YOUR answer (its first token) and what it
    // gave the true token. A right answer is the true token: one number, said once.
    const multiToken = fb.your_token && tokenText(fb.your_token) !== (fb.your_text ?? '');
    els.fbModelRow.hidden = skipped || correct;
    if (!skipped && !correct) {
      els.fbModelLabel.textContent = multiToken ? 'The model gave your first token' : 'The model gave your answer';
      els.fbModel.replaceChildren(...probText(fb.model_prob, fb.model_rank, fb));
    }
    els.fbTargetProbLabel.textContent = correct ? 'The model gave it (your answer)' : 'The model gave the next token';
    els.fbTargetProb.replaceChildren(...probText(fb.target_prob, fb.target_rank, fb));
    renderWhy(fb, correct, skipped);
    els.fbTop1.textContent = '';
    const top1Right = tokenText(fb.model_top1) === tokenText(fb.target);
    els.fbTop1.append(chip(tokenText(fb.model_top1), top1Right ? 'chip--ok' : 'chip--model'),
      el('span', top1Right ? 'fb-ok' : 'fb-bad', top1Right ? ' ✓ right' : ' ✗ wrong'));

    els.fbPoints.textContent = `+${Number(fb.points) || 0}`;
    els.fbTotal.textContent = String(fb.total_points ?? 0);
    els.fbRank.textContent = fb.rank ? String(fb.rank) : '–';
    els.fbRankLabel.textContent = fb.n_players ? `rank of ${fb.n_players}` : 'rank';
    const share = fb.class_share_of_target;
    els.fbClass.textContent = share === null || share === undefined
      ? ''
      : `${wholePct(share)} of the class found the true token.`;
  }

  /** The feedback card's colour and mark: right, skipped (or no answer) or wrong. */
  function markFeedback(right, skipped) {
    els.feedback.classList.remove('is-ok', 'is-bad', 'is-skip');
    els.feedback.classList.add(right ? 'is-ok' : skipped ? 'is-skip' : 'is-bad');
    els.fbMark.textContent = right ? '✓' : skipped ? '–' : '✗';
  }

  /** After a pairwise or distribution round: the chance I gave what came next beside the
   * model's (and the class's), my bets beside the model's mass on the same cells, my points. */
  function renderJudgedFeedback(fb, round) {
    const j = fb.judgement || {};
    const noAnswer = fb.answered === false;
    const skipped = !!fb.skipped || noAnswer;
    const hit = !!fb.correct && !skipped;
    markFeedback(hit, skipped);
    const pairwise = fb.mode === 'pairwise';
    els.fbTitle.textContent = noAnswer ? 'No answer' : skipped ? 'Skipped'
      : pairwise ? (hit ? 'Right side!' : 'The other one') : (hit ? 'You named it!' : 'Not among your bets');
    els.fbRound.textContent = round.total ? `Round ${round.number} of ${round.total}` : '';

    const box = els.fbJudge;
    box.textContent = '';
    if (pairwise) {
      const pair = el('div', 'fb-pair');
      for (const side of ['left', 'right']) {
        const original = j.true_side === side;
        const s = el('div', `fb-pair__side${original ? ' is-true' : ''}`);
        s.dataset.side = side;
        s.append(el('span', 'fb-pair__tag', side === 'left' ? 'Left' : 'Right'),
          chip(tokenText(j[side]), `chip--lg${original ? ' chip--target' : ''}`),
          el('span', 'fb-pair__what', original ? '✓ original' : 'the other'));
        pair.append(s);
      }
      box.append(pair);
    } else {
      const target = el('p', 'fb-judge__target');
      const tc = chip(tokenText(fb.target), 'chip--target chip--lg');
      tc.id = 'fb-target-chip';
      target.append('What came next: ', tc);
      box.append(target);
      if (Array.isArray(j.cells) && j.cells.length) box.append(cellsTable(j.cells));
    }
    const facts = el('dl', 'fb-facts fb-facts--judge');
    const fact = (label, value, cls) => {
      const d = el('div', `fb-fact${cls ? ` ${cls}` : ''}`);
      d.append(el('dt', null, label), el('dd', null, value));
      facts.append(d);
      return d;
    };
    const what = pairwise ? 'the original' : 'what came next';
    fact(`You gave ${what}`, skipped ? (noAnswer ? 'no answer' : 'I don\u2019t know') : wholePct(j.your_true_probability), 'fb-fact--you').id = 'fb-you';
    fact(`The model gave ${what}`, pct(j.model_true_probability), 'fb-fact--model').id = 'fb-model-judge';
    if (j.class_true_probability !== null && j.class_true_probability !== undefined) {
      fact('The class on average', wholePct(j.class_true_probability));
    }
    box.append(facts);

    els.fbPoints.textContent = `+${Number(fb.points) || 0}`;
    els.fbTotal.textContent = String(fb.total_points ?? 0);
    els.fbRank.textContent = fb.rank ? String(fb.rank) : '–';
    els.fbRankLabel.textContent = fb.n_players ? `rank of ${fb.n_players}` : 'rank';
    els.fbWhy.hidden = skipped;
    els.fbWhy.dataset.verdict = hit ? 'likely' : 'unlikely';
    els.fbWhy.textContent = skipped ? '' : `${Number(fb.points) || 0} points for giving ${what} `
      + `${wholePct(j.your_true_probability)}: sure and right earns 100, 50/50 earns 85, 10% earns 50, 1% or less 0.`;
    els.fbClass.textContent = '';
  }

  /** My bets, merged by first token, beside the model's probability of the same cells. */
  function cellsTable(cells) {
    const table = el('table', 'fb-cells');
    const head = el('tr');
    head.append(el('th', null, 'Your bet'), el('th', 'num', 'You'), el('th', 'num', 'Model'));
    const thead = el('thead');
    thead.append(head);
    const body = el('tbody');
    for (const c of cells) {
      const tr = el('tr', c.is_true ? 'is-true' : '');
      const name = el('td');
      if (c.else) name.append(el('span', 'muted', 'something else'));
      else name.append(chip(c.text ?? '', c.is_true ? 'chip--target' : 'chip--guess'));
      if (c.is_true) name.append(el('span', 'fb-ok', ' ✓'));
      const known = c.model !== null && c.model !== undefined;
      tr.append(name, el('td', 'num', wholePct(c.person)), el('td', `num${known ? '' : ' muted'}`, known ? pct(c.model) : 'not known'));
      body.append(tr);
    }
    table.append(thead, body);
    return table;
  }

  /** "4.0% (rank 3)", or for a token outside the stored top list "below 0.26% (not in its top
   * 64)": two pieces that each stay on one line. */
  function probText(p, rank, fb) {
    let parts;
    if (p !== null && p !== undefined) {
      parts = [pct(p), rank ? `(rank ${Number(rank).toLocaleString('en')})` : ''];
    } else if (fb.min_top_k_prob) {
      parts = [`below ${pct(fb.min_top_k_prob)}`, `(not in its top ${fb.top_k})`];
    } else {
      parts = ['very little', '(not in its top list)'];
    }
    return parts.filter(Boolean).flatMap((t, i) => (i ? [' ', el('span', null, t)] : [el('span', null, t)]));
  }

  /** Why these points: the bonus comes from the model's verdict on your answer (as on the
   * projector: likely = at least 10%, plausible = in its top list, unlikely = outside it). */
  function renderWhy(fb, correct, skipped) {
    const points = Number(fb.points) || 0;
    const bonus = Number(fb.bonus) || 0;
    const verdict = fb.your_verdict;
    const p = fb.model_prob !== null && fb.model_prob !== undefined ? ` (${pct(fb.model_prob)})` : '';
    const targetP = fb.target_prob !== null && fb.target_prob !== undefined ? ` (${pct(fb.target_prob)})` : '';
    let text = '';
    if (skipped) {
      text = '';
    } else if (correct) {
      text = bonus > 0
        ? `100 for the true token + ${bonus} bonus: the model found it ${verdict || 'plausible'}${p || targetP}.`
        : `100 for the true token; no bonus: ${verdict === 'unlikely' || !verdict
          ? 'the model found it unlikely' : 'the model gave it too little'}.`;
    } else if (points > 0) {
      text = `Not the true token, but +${points}: the model found your answer ${verdict || 'plausible'}${p}.`;
    } else {
      text = verdict === 'unlikely' || !verdict
        ? `No points: the model found your answer unlikely (not in its top ${fb.top_k || 'list'}).`
        : `No points: the model gave your answer too little${p} for a bonus.`;
    }
    els.fbWhy.textContent = text;
    els.fbWhy.hidden = !text;
    els.fbWhy.dataset.verdict = verdict || '';
  }

  // ---------------------------------------------------------------- finished

  function renderFinished(st) {
    const row = myRow();
    const fb = latestFeedback();
    els.endTitle.textContent = S.nickname ? `Thanks for playing, ${S.nickname}!` : 'Thanks for playing!';
    const points = row ? row.points : fb ? fb.total_points : 0;
    els.endPoints.textContent = String(points ?? 0);
    const rank = row ? row.rank : fb ? fb.rank : null;
    const n = fb && fb.n_players ? fb.n_players : (Number(st.n_players) || null);
    els.endRank.textContent = rank ? String(rank) : '–';
    els.endRankLabel.textContent = n ? `rank of ${n}` : 'rank';
    els.endCorrect.textContent = row ? `${row.correct}/${row.answered}` : '–';
    const s = st.summary || {};
    const mode = s.mode || modeOf(st);
    if (mode === 'pairwise' || mode === 'distribution') {
      els.endCorrectLabel.textContent = mode === 'pairwise' ? 'right side' : 'named it';
      els.endClass.textContent = wholePct(s.class_true_probability);
      els.endModel.textContent = wholePct(s.model_true_probability);
      els.endClassDetail.textContent = 'average chance given to what came next';
      els.endModelDetail.textContent = 'the same, for the model';
      const n = Array.isArray(s.rounds) ? s.rounds.length : 0;
      els.endNote.textContent = n
        ? `Over ${n} round${n === 1 ? '' : 's'} and ${s.n_answers ?? 0} answers from ${s.n_players ?? 0} players. Model: ${modelName}.`
        : '';
      return;
    }
    els.endClass.textContent = wholePct(s.class_accuracy);
    els.endModel.textContent = wholePct(s.model_accuracy);
    const rounds = Array.isArray(s.rounds) ? s.rounds.length : 0;
    els.endNote.textContent = rounds
      ? `Over ${rounds} round${rounds === 1 ? '' : 's'} and ${s.n_answers ?? 0} answers from ${s.n_players ?? 0} players. `
        + `The class's most common answer was right in ${wholePct(s.plurality_accuracy)} of the rounds. Model: ${modelName}.`
      : '';
  }

  // ---------------------------------------------------------------- events

  els.joinForm.addEventListener('submit', (e) => {
    e.preventDefault();
    join();
  });
  els.joinCode.addEventListener('input', () => {
    const pos = els.joinCode.selectionStart;
    els.joinCode.value = els.joinCode.value.toUpperCase();
    try { els.joinCode.setSelectionRange(pos, pos); } catch (_) { /* ignore */ }
    els.joinCode.removeAttribute('aria-invalid');
  });
  els.joinName.addEventListener('input', () => els.joinName.removeAttribute('aria-invalid'));
  // Enter in the code field goes on to the nickname (the phone keyboard's "next"), not to join.
  els.joinCode.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' || e.isComposing) return;
    e.preventDefault();
    els.joinCode.value = normalizeCode(els.joinCode.value);
    els.joinName.focus();
  });

  els.form.addEventListener('submit', (e) => {
    e.preventDefault();
    sendGuess(false);
  });
  els.skipBtn.addEventListener('click', () => sendGuess(true));
  els.rejoinBtn.addEventListener('click', () => showJoin(''));

  // ---------------------------------------------------------------- connection

  let socket = null;
  if (typeof window.io !== 'function') {
    showJoin('The live connection could not start (the Socket.IO script did not load). Reload the page.');
    els.joinBtn.disabled = true;
    return;
  }

  if (S.code) S.token = load('local', tokenKey(S.code));
  if (S.token) setScreen('connecting');
  else showJoin('');

  socket = window.io({ reconnectionDelayMax: 4000 });
  socket.on('connect', () => {
    els.conn.hidden = true;
    if (S.token) rejoin();
  });
  socket.on('disconnect', () => { if (S.token) els.conn.hidden = false; });
  socket.on('connect_error', () => { if (S.token) els.conn.hidden = false; });
  socket.on('room_state', (st) => {
    if (!S.token || !st || (st.code && normalizeCode(st.code) !== S.code)) return;
    applyState(st, false);
  });
  socket.on('feedback', (fb) => {
    if (!fb || fb.round === undefined) return;
    S.feedback[fb.round] = fb;
    if (S.state && S.state.phase === 'reveal' && S.state.round && S.state.round.index === fb.round) render();
    else renderMeBar();
  });
  socket.on('removed', (msg) => {
    store('local', tokenKey(S.code), null);
    S.token = null;
    S.state = null;
    stopCountdown();
    els.removedText.textContent = (msg && msg.message) || 'The teacher removed you from the room.';
    setScreen('removed');
  });
  socket.on('room_error', (e) => {
    // join, rejoin and guess show their errors next to the form (from the acknowledgement).
    if (e && ['join', 'rejoin', 'guess'].includes(e.event)) return;
    toast(e && e.message);
  });
})();

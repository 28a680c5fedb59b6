/* humanlm: projector view of a classroom room (the host). Plain ES2020, no build step.
 *
 * Protocol: docs/rooms-protocol.md. The host token lives in localStorage["humanlm.host.<CODE>"];
 * on every (re)connect this page sends host_join with it and redraws from the HostState it gets.
 * Token texts always go through textContent, never innerHTML.
 */
'use strict';

(() => {
  const root = document.getElementById('host');
  if (!root) return;

  const $ = (id) => document.getElementById(id);
  const code = root.dataset.code;
  const modelName = root.dataset.modelName || 'the model';
  const TOKEN_KEY = `humanlm.host.${code}`;
  const ACK_TIMEOUT_MS = 10000;
  const MAX_HISTOGRAM_ROWS = 8;
  const MAX_CHART_ROWS = 8;  // fewer when they do not fit the screen (fitReveal)
  const MIN_CHART_ROWS = 3;
  const MAX_LEADER_ROWS_REVEAL = 5; // the projector keeps the chart and the guesses beside it
  const MAX_LEADER_ROWS_FINAL = 10;

  const els = {
    joinUrl: $('join-url-text'),
    playerCount: $('player-count'),
    playerCountWord: $('player-count-word'),
    roundLabel: $('round-label'),
    phaseBadge: $('phase-badge'),
    conn: $('conn'),
    toast: $('toast'),
    toastMessage: $('toast-message'),
    toastClose: $('toast-close'),
    nothostTitle: $('nothost-title'),
    nothostText: $('nothost-text'),
    failedError: $('failed-error'),
    lobbyTitle: $('lobby-title'),
    lobbyLead: $('lobby-lead'),
    playersLobby: $('players-lobby'),
    playersMenu: $('players-menu'),
    playersMenuList: $('players-menu-list'),
    round: $('round'),
    roundAsk: $('round-ask'),
    prefix: $('prefix'),
    answeredN: $('answered-n'),
    answeredTotal: $('answered-total'),
    countdown: $('countdown'),
    histo: $('histo'),
    histoTitle: $('histo-title'),
    histogram: $('histogram'),
    stops: $('stops'),
    stopsBars: $('stops-bars'),
    pairBig: $('pair-big'),
    pairLeft: $('pair-left'),
    pairRight: $('pair-right'),
    pwReveal: $('pw-reveal'),
    pwRevealPair: $('pw-reveal-pair'),
    pwClass: $('pw-class'),
    pwClassNote: $('pw-class-note'),
    pwModel: $('pw-model'),
    pwModelNote: $('pw-model-note'),
    pwStops: $('pw-stops'),
    judgeFacts: $('judge-facts'),
    judgeFactsText: $('judge-facts-text'),
    compareTitle: $('compare-title'),
    roundsTitle: $('rounds-title'),
    histogramEmpty: $('histogram-empty'),
    histoHidden: $('histo-hidden'),
    revealPrefix: $('reveal-prefix'),
    targetBig: $('target-big'),
    revealStats: $('reveal-stats'),
    compare: $('compare'),
    comparePanel: $('compare-panel'),
    compareNote: $('compare-note'),
    revealSide: $('reveal-side'),
    guessesPanel: $('guesses-panel'),
    leaderPanel: $('leader-panel'),
    leaderboard: $('leaderboard'),
    leaderboardBody: $('leaderboard-body'),
    leaderHidden: $('leader-hidden'),
    guessesLikely: $('guesses-likely'),
    guessesPlausible: $('guesses-plausible'),
    guessesUnlikely: $('guesses-unlikely'),
    summaryTiles: $('summary-tiles'),
    summaryRounds: $('summary-rounds'),
    finalLeaderBody: $('final-leaderboard-body'),
    finalLeaderHidden: $('final-leader-hidden'),
    controls: $('controls'),
    settings: $('settings'),
    primary: $('primary-btn'),
    finish: $('finish-btn'),
    newRoom: $('new-room-link'),
    histoHint: $('histo-hint'),
    primaryHint: $('primary-hint'),
    histoToggle: $('histo-toggle'),
    leaderToggle: $('leader-toggle'),
    lockToggle: $('lock-toggle'),
    lockHint: $('lock-hint'),
    joinrailLocked: $('joinrail-locked'),
    timerSelect: $('timer-select'),
    removeDialog: $('remove-dialog'),
    removeName: $('remove-name'),
    removeConfirm: $('remove-confirm'),
    removeCancel: $('remove-cancel'),
    reveal: $('reveal'),
    cutsPanel: $('cuts-panel'),
    cutsBody: $('cuts-body'),
    cutsToggle: $('cuts-toggle'),
  };

  const S = {
    state: null,      // last HostState
    answers: null,    // last {round, answered, total, histogram} for the current round
    busy: false,      // a host_action is on its way
    primaryAction: null,
    // How other models cut the text (key T, token rounds' reveal): off at each new reveal.
    cuts: { on: false, text: null, abort: null },
  };

  // ---------------------------------------------------------------- helpers

  const {
    el, chip, tokenText, pct, wholePct, showScreen, emitWithAck, createToast, createCountdown,
  } = window.humanlm;
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  /** What the room's students answer: token (type it), pairwise (which came next?) or
   * distribution (bet 100 points). */
  const modeOf = (st) => (st && (st.mode || (st.round && st.round.mode))) || 'token';
  const ASK = {
    token: 'What comes next?',
    pairwise: 'Which one came next?',
    distribution: 'Bet on what comes next',
  };
  const LIVE_TITLE = {
    token: 'Class answers so far',
    pairwise: 'How likely is LEFT the original?',
    distribution: 'The class’s bets so far',
  };
  // What counts as a hit: the leaderboard's column (short) and the summary's tile.
  const HIT_LABEL = { token: 'Correct', pairwise: 'Hits', distribution: 'Hits' };
  const HIT_TITLE = {
    token: 'Answers with the true token',
    pairwise: 'Answers that gave the original more than 50%',
    distribution: 'Answers that named the true token among their guesses',
  };
  const HIT_TILE = { pairwise: 'Leaned right', distribution: 'Named it' };
  const call = (event, payload) => emitWithAck(socket, event, payload, ACK_TIMEOUT_MS,
    'The server did not answer in time. Check the connection.');
  const toast = createToast(els.toast, els.toastMessage, els.toastClose, 8000);
  const countdown = createCountdown(els.countdown);

  function setScreen(name) {
    showScreen(root, name);
  }

  // ---------------------------------------------------------------- join rail

  (function showJoinUrl() {
    const url = root.dataset.joinUrl || '';
    // Show the short form ("host:5000/join"): the code is printed huge right under it.
    let shown = url.replace(/^https?:\/\//, '');
    const suffix = `/${code}`;
    if (shown.toUpperCase().endsWith(suffix.toUpperCase())) shown = shown.slice(0, -suffix.length);
    shown = shown || url;
    // Address and path in two pieces, so a narrow rail breaks the line before "/join".
    const cut = shown.indexOf('/');
    els.joinUrl.textContent = '';
    if (cut > 0) {
      els.joinUrl.append(el('span', 'joinrail__host', shown.slice(0, cut)), el('span', 'joinrail__path', shown.slice(cut)));
    } else {
      els.joinUrl.textContent = shown;
    }
    els.joinUrl.title = url;
  })();

  // ---------------------------------------------------------------- players

  function renderPlayers(players) {
    const list = Array.isArray(players) ? players : [];
    els.playerCount.textContent = String(list.length);
    els.playerCountWord.textContent = list.length === 1 ? 'player' : 'players';
    for (const ul of [els.playersLobby, els.playersMenuList]) {
      ul.textContent = '';
      for (const p of list) {
        const li = el('li', `player${p.connected === false ? ' player--away' : ''}`);
        li.dataset.playerId = String(p.id);
        const name = el('span', 'player__name', p.nickname);
        const dot = el('span', 'player__dot');
        dot.title = p.connected === false ? 'disconnected' : 'connected';
        const rm = el('button', 'player__remove', '✕');
        rm.type = 'button';
        rm.setAttribute('aria-label', `Remove ${p.nickname}`);
        rm.title = `Remove ${p.nickname} from the room`;
        rm.addEventListener('click', () => askRemove(p, rm));
        li.append(dot, name, rm);
        ul.appendChild(li);
      }
    }
    if (!list.length) {
      els.playersMenuList.appendChild(el('li', 'players__empty muted', 'Nobody has joined yet.'));
    }
  }

  // Removing asks first, in a modal dialog (Esc or Cancel keeps the player).
  let removing = null; // {player, button} the dialog asks about

  function askRemove(p, button) {
    removing = { player: p, button };
    els.removeName.textContent = p.nickname;
    els.removeConfirm.textContent = `Remove ${p.nickname}`;
    els.removeConfirm.disabled = false;
    if (typeof els.removeDialog.showModal === 'function') {
      els.removeDialog.showModal();
      els.removeCancel.focus();
    } else if (window.confirm(`Remove ${p.nickname} from the room?`)) {
      removePlayer();
    }
  }

  async function removePlayer() {
    if (!removing) return;
    const { player, button } = removing;
    removing = null;
    if (els.removeDialog.open) els.removeDialog.close();
    if (button.isConnected) button.disabled = true;
    const resp = await call('host_remove', { code, player_id: player.id });
    if (!resp.ok) {
      if (button.isConnected) button.disabled = false;
      toast(resp.error);
    }
  }

  els.removeConfirm.addEventListener('click', () => removePlayer());
  els.removeCancel.addEventListener('click', () => els.removeDialog.close());
  els.removeDialog.addEventListener('close', () => { removing = null; });
  // A click on the backdrop (outside the box) cancels too.
  els.removeDialog.addEventListener('click', (e) => {
    if (e.target === els.removeDialog) els.removeDialog.close();
  });

  // The Players menu closes on a click outside it and on Esc, like any menu.
  document.addEventListener('click', (e) => {
    if (els.playersMenu.open && !els.playersMenu.contains(e.target)
        && !els.removeDialog.contains(e.target)) {
      els.playersMenu.open = false;
    }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape' || !els.playersMenu.open || els.removeDialog.open) return;
    els.playersMenu.open = false;
    els.playersMenu.querySelector('summary').focus();
  });

  // ---------------------------------------------------------------- text of the round

  /** Fill `box` with the prefix tokens, then a blinking slot (or the revealed target). */
  function renderPrefix(box, context, target) {
    box.textContent = '';
    const p = el('p', 'prefix__text');
    const ctx = Array.isArray(context) ? context.map(String) : [];
    if (!ctx.length) p.appendChild(el('span', 'prefix__start', 'Start of the text →'));
    ctx.forEach((t, i) => {
      p.appendChild(el('span', `tok${i % 2 ? ' tok--b' : ''}`, t));
    });
    if (target === undefined) {
      const slot = el('span', 'slot');
      slot.setAttribute('aria-hidden', 'true');
      slot.append(el('span', 'slot__ghost'), el('span', 'slot__caret'));
      p.appendChild(slot);
    } else {
      p.appendChild(el('span', 'tok tok--revealed tok--ok', tokenText(target)));
    }
    box.appendChild(p);
    requestAnimationFrame(() => { box.scrollTop = box.scrollHeight; });
  }

  /** A pairwise round: the two tokens, big, without saying which one is the original. */
  function renderPair(pair, mode) {
    const show = mode === 'pairwise' && !!pair;
    els.pairBig.hidden = !show;
    if (!show) return;
    els.pairLeft.replaceChildren(chip(tokenText(pair.left), 'chip--pair'));
    els.pairRight.replaceChildren(chip(tokenText(pair.right), 'chip--pair'));
  }

  // ---------------------------------------------------------------- histogram (live answers)

  function currentAnswers() {
    const st = S.state;
    if (!st) return null;
    const idx = st.round ? st.round.index : null;
    if (S.answers && S.answers.round === idx) return S.answers;
    return st.answers || null;
  }

  function renderAnswers() {
    const st = S.state;
    if (!st) return;
    const a = currentAnswers() || { answered: 0, total: 0, histogram: null };
    els.answeredN.textContent = String(a.answered ?? 0);
    els.answeredTotal.textContent = String(a.total ?? (st.players || []).length);
    const show = !!(st.settings && st.settings.show_histogram);
    els.histo.hidden = !show;
    els.histoHidden.hidden = show;
    els.round.classList.toggle('round--no-histo', !show);
    if (!show) return;
    const mode = modeOf(st);
    els.histoTitle.textContent = LIVE_TITLE[mode] || LIVE_TITLE.token;
    els.stops.hidden = mode !== 'pairwise';
    els.histogram.hidden = mode === 'pairwise';
    const live = a.live && a.live.kind === mode ? a.live : null;
    if (mode === 'pairwise') {
      const stops = live ? live.stops : [];
      els.histogramEmpty.hidden = !!(live && live.judged);
      // Left to right as on the phones: 99% (surely LEFT) first, 1% (surely RIGHT) last.
      renderStops(els.stopsBars, [...(stops || [])].sort((x, y) => y.percent - x.percent), null);
    } else if (mode === 'distribution') {
      renderPooled(live);
    } else {
      renderHistogram(Array.isArray(a.histogram) ? a.histogram : []);
    }
  }

  /** Columns, one per stop of the pairwise scale, as tall as its count; `model`, a percent,
   * marks the stop nearest the model's own answer. */
  function renderStops(list, stops, model) {
    list.textContent = '';
    const max = Math.max(1, ...stops.map((x) => Number(x.count) || 0));
    const nearest = model === null || model === undefined ? null
      : stops.reduce((best, x) => (Math.abs(x.percent - model) < Math.abs(best.percent - model) ? x : best), stops[0]);
    for (const x of stops) {
      const n = Number(x.count) || 0;
      const li = el('li', `stop${x === nearest ? ' is-model' : ''}${x.percent === 50 ? ' stop--even' : ''}`);
      li.dataset.percent = String(x.percent);
      li.dataset.count = String(n);
      const col = el('span', 'stop__col');
      col.append(el('span', 'stop__n', n ? String(n) : ''));
      const fill = el('span', 'stop__fill');
      fill.style.height = `calc((100% - 1.9rem) * ${(n / max).toFixed(4)})`;
      col.append(fill);
      li.append(col, el('span', 'stop__pct', `${x.percent}%`));
      if (x === nearest) li.append(el('span', 'stop__model', 'model'));
      li.setAttribute('aria-label', `${x.percent}%: ${plural(n, 'answer', 'answers')}${x === nearest ? ' (nearest the model)' : ''}`);
      list.appendChild(li);
    }
  }

  /** A distribution round, live: the class's candidates by first token, the average share of
   * points on each (the answers that did not name it count 0), then "something else". */
  function renderPooled(live) {
    const list = els.histogram;
    list.textContent = '';
    const cells = live && Array.isArray(live.cells) ? live.cells : [];
    els.histogramEmpty.hidden = !!(live && live.judged);
    if (!live || !live.judged) return;
    const others = live.others && live.others.count ? live.others : null;
    const shares = [...cells.map((c) => Number(c.share) || 0), Number(live.else_share) || 0,
      others ? Number(others.share) || 0 : 0];
    const max = Math.max(0.01, ...shares);
    const row = (label, share, cls) => {
      const li = el('li', `hbar${cls ? ` ${cls}` : ''}`);
      li.appendChild(label);
      const track = el('span', 'hbar__track');
      const fill = el('span', 'hbar__fill');
      fill.style.width = `${((share / max) * 100).toFixed(1)}%`;
      track.appendChild(fill);
      li.append(track, el('span', 'hbar__count hbar__share', wholePct(share)));
      li.dataset.share = String(share);
      return li;
    };
    for (const c of cells) {
      const li = row(chip(c.text, 'chip--hbar'), Number(c.share) || 0, '');
      li.dataset.text = String(c.text ?? '');
      list.appendChild(li);
    }
    if (others) list.appendChild(row(el('span', 'hbar__other', plural(others.count, 'other', 'others')), Number(others.share) || 0, 'hbar--other'));
    list.appendChild(row(el('span', 'hbar__else', 'something else'), Number(live.else_share) || 0, 'hbar--else'));
  }

  function renderHistogram(rows) {
    const list = els.histogram;
    list.textContent = '';
    els.histogramEmpty.hidden = rows.length > 0;
    if (!rows.length) return;
    const shown = rows.slice(0, MAX_HISTOGRAM_ROWS);
    const rest = rows.slice(MAX_HISTOGRAM_ROWS);
    const max = Math.max(1, ...rows.map((r) => Number(r.count) || 0));
    const sum = rows.reduce((s, r) => s + (Number(r.count) || 0), 0) || 1;
    const row = (label, count, isOther) => {
      const li = el('li', `hbar${isOther ? ' hbar--other' : ''}`);
      li.appendChild(label);
      const track = el('span', 'hbar__track');
      const fill = el('span', 'hbar__fill');
      fill.style.width = `${((count / max) * 100).toFixed(1)}%`;
      track.appendChild(fill);
      li.appendChild(track);
      const n = el('span', 'hbar__count', String(count));
      n.title = `${pct(count / sum)} of the answers`;
      li.appendChild(n);
      li.dataset.count = String(count);
      return li;
    };
    for (const r of shown) {
      const li = row(chip(r.text, 'chip--hbar'), Number(r.count) || 0, false);
      li.dataset.text = String(r.text ?? '');
      list.appendChild(li);
    }
    if (rest.length) {
      const n = rest.reduce((s, r) => s + (Number(r.count) || 0), 0);
      list.appendChild(row(el('span', 'hbar__other', `${plural(rest.length, 'other', 'others')}`), n, true));
    }
  }

  // ---------------------------------------------------------------- countdown

  function stopCountdown() {
    countdown.stop();
  }

  function startCountdown(round, phase) {
    stopCountdown();
    if (!round || !round.deadline || phase !== 'answering') return;
    const deadline = Date.parse(round.deadline);
    // At 0:00 it stops ticking: the server locks the round itself and sends a new host_state.
    if (!Number.isNaN(deadline)) countdown.start(deadline);
  }

  // ---------------------------------------------------------------- reveal

  function renderReveal(st) {
    const r = st.reveal || {};
    const round = st.round || {};
    const mode = r.mode || modeOf(st);
    root.dataset.mode = mode;
    renderPrefix(els.revealPrefix, round.context, r.target || { text: '' });

    els.targetBig.textContent = '';
    els.targetBig.appendChild(chip(tokenText(r.target), 'chip--target chip--huge'));
    const judged = mode === 'pairwise' || mode === 'distribution';
    els.pwReveal.hidden = mode !== 'pairwise';
    els.comparePanel.hidden = mode === 'pairwise';
    els.guessesPanel.hidden = judged;
    els.judgeFacts.hidden = !judged;
    setLeaderboardHeads(mode);
    if (judged) {
      renderJudgedStats(r, mode);
      if (mode === 'pairwise') renderPairwiseReveal(r.pairwise || {});
      else renderPooledReveal(r.distribution || {}, r);
      els.judgeFactsText.textContent = 'Points come from the chance you gave what really came next: '
        + '100 if you were sure and right, 85 for 50/50, 50 for 10%, 0 for 1% or less. '
        + 'Saying what you really think scores best.';
      renderLeaderboard(els.leaderboardBody, els.leaderHidden, els.leaderboard, st, MAX_LEADER_ROWS_REVEAL);
      return;
    }
    els.compareTitle.textContent = 'The class vs the model';

    // "2 of 3 correct (67%)", "1 skipped", "Model's top pick ␣teacher ✓": one short line each.
    els.revealStats.textContent = '';
    const answered = Number(r.answered) || 0;
    const correct = Number(r.correct) || 0;
    const line1 = el('span', 'stat-line');
    line1.append(el('strong', null, `${correct} of ${answered}`), ` correct${answered ? ` (${wholePct(correct / answered)})` : ''}`);
    els.revealStats.append(line1);
    if (r.skips) els.revealStats.append(el('span', 'stat-line muted', `${r.skips} skipped`));
    const line2 = el('span', `stat-line stat-line--model ${r.model_correct ? 'is-ok' : 'is-bad'}`);
    line2.append(`Model's top pick `, chip(tokenText(r.model_top1), r.model_correct ? 'chip--ok' : 'chip--model'),
      el('span', 'stat-line__mark', r.model_correct ? ' ✓' : ' ✗'));
    els.revealStats.append(line2);

    renderCompare(r);
    renderGuesses(r);
    renderLeaderboard(els.leaderboardBody, els.leaderHidden, els.leaderboard, st, MAX_LEADER_ROWS_REVEAL);
  }

  /** The leaderboard's "correct" column says what counts as right in this room. */
  function setLeaderboardHeads(mode) {
    document.querySelectorAll('.leaderboard .lb-correct').forEach((th) => {
      th.textContent = HIT_LABEL[mode] || HIT_LABEL.token;
      th.title = HIT_TITLE[mode] || HIT_TITLE.token;
    });
    document.querySelectorAll('.leaderboard .lb-log').forEach((th) => {
      th.title = mode === 'token'
        ? 'Mean ln p of the model for the answers (closer to 0 = answers the model found likely)'
        : 'Mean ln of the chance each gave to what came next (closer to 0 = better)';
    });
  }

  function renderJudgedStats(r, mode) {
    els.revealStats.textContent = '';
    const answered = Number(r.answered) || 0;
    const skips = Number(r.skips) || 0;
    const judged = answered - skips;
    const hits = Number(r.correct) || 0;
    const line1 = el('span', 'stat-line');
    line1.append(el('strong', null, `${hits} of ${judged}`),
      mode === 'pairwise' ? ' leaned to the original' : ' named it');
    els.revealStats.append(line1);
    if (skips) els.revealStats.append(el('span', 'stat-line muted', `${skips} skipped`));
    const part = (mode === 'pairwise' ? r.pairwise : r.distribution) || {};
    const line2 = el('span', 'stat-line stat-line--model');
    line2.append(`Class ${wholePct(part.class_true_probability)} · model ${pct(part.model_true_probability)}`);
    els.revealStats.append(line2);
  }

  /** Pairwise reveal: the two tokens with the original marked, the class's mean chance for it
   * beside the model's own answer G(orig)/(G(orig)+G(other)), and the class's answers. */
  function renderPairwiseReveal(pw) {
    els.pwRevealPair.textContent = '';
    const pair = pw.pair || {};
    for (const side of ['left', 'right']) {
      const original = pw.true_side === side;
      const box = el('div', `pw-reveal__side${original ? ' is-true' : ''}`);
      box.dataset.side = side;
      box.append(el('span', 'pair-big__tag', side === 'left' ? 'Left' : 'Right'),
        chip(tokenText(pair[side]), `chip--pair${original ? ' chip--target' : ''}`),
        el('span', 'pw-reveal__what', original ? '✓ the original' : 'the other'));
      const prob = original ? (pw.true || {}).prob : (pw.alternative || {}).prob;
      if (prob !== null && prob !== undefined) box.append(el('span', 'pw-reveal__g', `model ${pct(prob)}`));
      els.pwRevealPair.append(box);
      if (side === 'left') els.pwRevealPair.append(el('span', 'pair-big__or', 'or'));
    }
    const judged = Number(pw.judged) || 0;
    els.pwClass.textContent = wholePct(pw.class_true_probability);
    els.pwClassNote.textContent = judged
      ? `average for the original · ${pw.leaned_true ?? 0} of ${judged} gave it more than 50%`
      : 'nobody answered';
    els.pwModel.textContent = pct(pw.model_true_probability);
    els.pwModelNote.textContent = 'G(original) ÷ (G(original) + G(other))';
    els.pwModelNote.title = 'The model’s own answer to the same question, from its probabilities of the two tokens';
    const modelPct = pw.model_true_probability === null || pw.model_true_probability === undefined
      ? null : Number(pw.model_true_probability) * 100;
    renderStops(els.pwStops, [...(pw.stops || [])].sort((x, y) => x.percent - y.percent), modelPct);
  }

  /** Distribution reveal: the class's bets pooled by first token beside the model's
   * probability of the same cells ("not known" outside its top list), then something else. */
  function renderPooledReveal(d, r) {
    els.compareTitle.textContent = 'The class’s bets vs the model';
    const list = els.compare;
    list.textContent = '';
    const rows = (Array.isArray(d.cells) ? d.cells : []).map((c) => ({ ...c, label: chip(c.text, 'chip--cbar') }));
    const others = d.others && d.others.count ? d.others : null;
    if (others) rows.push({ class: others.class, model: others.model, label: el('span', 'cbar__other', plural(others.count, 'other', 'others')), keep: true });
    const rest = d.else || {};
    rows.push({ class: rest.class, model: rest.model, is_true: !!rest.is_true, label: el('span', 'cbar__else', 'something else'), keep: true });
    const known = (v) => v !== null && v !== undefined;
    const max = Math.max(0.05, ...rows.map((x) => Math.max(Number(x.class) || 0, known(x.model) ? Number(x.model) : 0)));
    for (const row of rows) {
      const share = Math.max(0, Math.min(1, Number(row.class) || 0));
      const isKnown = known(row.model);
      const p = isKnown ? Math.max(0, Math.min(1, Number(row.model))) : 0;
      const modelText = isKnown ? pct(p) : 'not known';
      list.appendChild(compareRow({
        label: row.label, text: row.text, isTrue: row.is_true, trueTitle: 'what came next',
        extraClass: row.keep ? ' cbar--keep' : '',
        classWidth: share / max, classText: wholePct(share), classAria: `class ${wholePct(share)}`,
        modelWidth: p / max, modelText, modelAria: `model ${modelText}`, unknown: !isKnown,
      }));
    }
    const k = r && r.top_k ? ` ${r.top_k}` : '';
    els.compareNote.textContent = d.judged
      ? `Class = average of the points bet (of 100) · Model = probability from ${modelName}; “not known” = outside its top${k} list`
      : 'Nobody placed a bet this round.';
  }

  function renderCompare(r) {
    const list = els.compare;
    list.textContent = '';
    const rows = Array.isArray(r.chart) ? r.chart.slice() : [];
    // Keep the true token on the chart even when the server sent many rows.
    let shown = rows.slice(0, MAX_CHART_ROWS);
    const target = rows.find((x) => x.is_target);
    if (target && !shown.includes(target)) shown = shown.slice(0, MAX_CHART_ROWS - 1).concat([target]);
    const floor = r.min_top_k_prob;
    for (const row of shown) {
      const classShare = Math.max(0, Math.min(1, Number(row.class_share) || 0));
      const known = row.model_prob !== null && row.model_prob !== undefined;
      const modelProb = known ? Math.max(0, Math.min(1, Number(row.model_prob))) : 0;
      const countTxt = Number(row.class_count) ? ` (${row.class_count})` : '';
      list.appendChild(compareRow({
        label: chip(row.text, 'chip--cbar'), text: row.text, isTrue: row.is_target,
        trueTitle: 'the true token',
        classWidth: classShare, classText: `${wholePct(classShare)}${countTxt}`,
        classAria: `class ${wholePct(classShare)}`,
        modelWidth: modelProb, modelText: known ? pct(modelProb) : `<${pct(floor)}`,
        modelAria: `model ${known ? pct(modelProb) : `below ${pct(floor)}`}`,
      }));
    }
    const k = r.top_k ? ` (“<” = outside its top ${r.top_k})` : '';
    els.compareNote.textContent = rows.length
      ? `Class = share of the answers · Model = probability from ${modelName}${k}`
      : 'Nobody answered this round.';
  }

  /** One row of a reveal chart: its label (with a ✓ when it is what came next), then the class's
   * bar and the model's bar, each with its value; `unknown` greys the model's (not known). */
  function compareRow({ label, text, isTrue, trueTitle, extraClass = '', classWidth, classText,
    classAria, modelWidth, modelText, modelAria, unknown = false }) {
    const li = el('li', `cbar${isTrue ? ' cbar--target' : ''}${extraClass}`);
    if (text !== undefined) li.dataset.text = String(text ?? '');
    const labelBox = el('span', 'cbar__label');
    labelBox.appendChild(label);
    if (isTrue) {
      const mark = el('span', 'cbar__true', '✓');
      mark.title = trueTitle;
      labelBox.appendChild(mark);
    }
    li.appendChild(labelBox);
    const bars = el('span', 'cbar__bars');
    const classLine = el('span', 'cbar__line cbar__line--class');
    const cf = el('span', 'cbar__fill');
    cf.style.width = barWidth(classWidth);
    classLine.append(cf, el('span', 'cbar__val', classText));
    classLine.setAttribute('aria-label', classAria);
    const modelLine = el('span', 'cbar__line cbar__line--model');
    const mf = el('span', `cbar__fill${unknown ? ' cbar__fill--unknown' : ''}`);
    mf.style.width = barWidth(modelWidth);
    modelLine.append(mf, el('span', `cbar__val${unknown ? ' cbar__val--unknown' : ''}`, modelText));
    modelLine.setAttribute('aria-label', modelAria);
    bars.append(classLine, modelLine);
    li.appendChild(bars);
    return li;
  }

  /** A bar's length: its share of the line minus the room kept for the value after it. */
  function barWidth(share) {
    return `calc((100% - var(--val-w)) * ${share.toFixed(4)})`;
  }

  function renderGuesses(r) {
    const guesses = Array.isArray(r.guesses) ? r.guesses : [];
    const lists = { likely: els.guessesLikely, plausible: els.guessesPlausible, unlikely: els.guessesUnlikely };
    Object.values(lists).forEach((ul) => { ul.textContent = ''; });
    const item = (g) => {
      const li = el('li', `guess-item guess-item--${g.verdict || 'unlikely'}`);
      li.dataset.text = String(g.text ?? '');
      li.appendChild(chip(g.text, 'chip--guessitem'));
      if (Number(g.count) > 1) li.appendChild(el('span', 'guess-item__count', `×${g.count}`));
      const known = g.model_prob !== null && g.model_prob !== undefined;
      li.appendChild(el('span', 'guess-item__p', known ? pct(g.model_prob) : `<${pct(r.min_top_k_prob)}`));
      return li;
    };
    for (const g of guesses) (lists[g.verdict] || lists.unlikely).appendChild(item(g));
    Object.values(lists).forEach((ul) => {
      if (!ul.childNodes.length) ul.appendChild(el('li', 'guess-list__empty muted', 'none'));
    });
    els.guessesPlausible.previousElementSibling.title = r.top_k
      ? `In the model's top ${r.top_k}, below 10%` : 'In the model\u2019s top list, below 10%';
    els.guessesLikely.previousElementSibling.title = 'The model gave it at least 10%';
    els.guessesUnlikely.previousElementSibling.title = r.top_k
      ? `Outside the model's top ${r.top_k}` : 'Outside the model\u2019s top list';
  }

  function renderLeaderboard(tbody, hiddenNote, table, st, maxRows) {
    tbody.textContent = '';
    const show = !!(st.settings && st.settings.show_leaderboard);
    const rows = Array.isArray(st.leaderboard) ? st.leaderboard : null;
    const panelHidden = !show || !rows;
    table.hidden = panelHidden;
    hiddenNote.hidden = !panelHidden;
    if (panelHidden) return;
    for (const row of rows.slice(0, maxRows)) {
      const tr = el('tr', row.rank === 1 && Number(row.points) > 0 ? 'is-first' : '');
      tr.append(
        el('td', 'rank', String(row.rank)),
        el('td', 'name', row.nickname),
        el('td', 'num strong', String(row.points)),
        el('td', 'num', `${row.correct}/${row.answered}`),
        el('td', 'num muted', row.mean_log_score === null || row.mean_log_score === undefined
          ? '–' : Number(row.mean_log_score).toFixed(2)),
      );
      tbody.appendChild(tr);
    }
    if (rows.length > maxRows) {
      const tr = el('tr', 'more');
      tr.dataset.n = String(rows.length - maxRows);
      const td = el('td', 'muted', `+ ${rows.length - maxRows} more`);
      td.colSpan = 5;
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    if (!rows.length) {
      const tr = el('tr');
      const td = el('td', 'muted', 'No answers yet.');
      td.colSpan = 5;
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
  }

  // ---------------------------------------------------------------- how other models cut it (T)

  /** A token round's reveal: the only place the cuts are offered. */
  function cutsAvailable(st) {
    if (!st || st.phase !== 'reveal' || root.dataset.screen !== 'reveal') return false;
    const r = st.reveal || {};
    return (r.mode || modeOf(st)) === 'token' && !!st.round;
  }

  /** The end of the round's text and its true token, as humanlm.cutsText cuts it. */
  function cutsInput(st) {
    const round = st.round || {};
    const context = Array.isArray(round.context) ? round.context.map(String).join('') : '';
    const target = tokenText((st.reveal || {}).target);
    return { text: window.humanlm.cutsText(context, target), target };
  }

  /** Show or hide the panel as S.cuts says; ask the server for a text it has not cut yet. */
  function applyCuts() {
    const available = cutsAvailable(S.state);
    const on = available && S.cuts.on;
    els.cutsToggle.hidden = !available;
    els.cutsToggle.setAttribute('aria-pressed', on ? 'true' : 'false');
    els.reveal.classList.toggle('reveal--cuts', on);
    els.cutsPanel.hidden = !on;
    if (!on) return;
    const { text, target } = cutsInput(S.state);
    if (S.cuts.text === text) {
      fitCuts();
      return;
    }
    S.cuts.text = text;
    if (S.cuts.abort) S.cuts.abort.abort();
    S.cuts.abort = typeof AbortController === 'function' ? new AbortController() : null;
    fitCuts();
    window.humanlm.loadCuts(els.cutsBody, text, { target, signal: S.cuts.abort ? S.cuts.abort.signal : undefined })
      .then(() => fitCuts());
  }

  /** Many tokenizers (up to six) or a long text: smaller chips until the panel fits the screen
   * (1.6rem, 32 px at 1080p, down to 1rem); below that it scrolls. */
  function fitCuts() {
    const panel = els.cutsPanel;
    let size = 1.6;
    panel.style.setProperty('--cut-size', `${size}rem`);
    if (panel.hidden || stacked()) return;
    while (overflows(panel) && size > 1.05) {
      size = Math.round((size - 0.1) * 10) / 10;
      panel.style.setProperty('--cut-size', `${size}rem`);
    }
  }

  function toggleCuts() {
    if (!cutsAvailable(S.state)) return;
    S.cuts.on = !S.cuts.on;
    applyCuts();
    if (!S.cuts.on) {
      // The chart again, with as many rows as fit now (it was not fitted while hidden).
      root.classList.add('is-refitting');
      renderReveal(S.state);
      fitReveal();
    }
  }

  // ---------------------------------------------------------------- fitting the screen

  /** A portrait window or a phone: the stacked layout, which may scroll (rooms.css). */
  const stacked = () => window.matchMedia('(max-aspect-ratio: 5/4), (max-width: 760px)').matches;
  const overflows = (box) => box.scrollHeight > box.clientHeight + 1;

  /**
   * Make the reveal fit the screen as it is: drop the chart's lowest rows (never the true
   * token's), the leaderboard's last rows and the guesses that do not fit ("+2 more"), until
   * nothing overflows. Run after the reveal is on screen, and again when the window changes.
   */
  function fitReveal() {
    if (stacked() || root.dataset.screen !== 'reveal') return;
    const chartRows = () => [...els.compare.querySelectorAll('.cbar:not(.cbar--target):not(.cbar--keep)')];
    while (overflows(els.comparePanel) && els.compare.children.length > MIN_CHART_ROWS) {
      const rows = chartRows();
      if (!rows.length) break;
      rows[rows.length - 1].remove();
    }
    // The leaderboard keeps at least 3 rows and leaves the guesses room for a line or two.
    const body = els.leaderboardBody;
    const room = () => els.revealSide.clientHeight - els.leaderPanel.offsetHeight;
    const playerRows = () => [...body.querySelectorAll('tr:not(.more)')];
    let cut = 0;
    while (room() < els.revealSide.clientHeight * 0.3 && playerRows().length > 3) {
      playerRows().pop().remove();
      cut += 1;
    }
    if (cut) {
      let more = body.querySelector('tr.more');
      const already = more ? Number(more.dataset.n) || 0 : 0;
      if (!more) {
        more = el('tr', 'more');
        more.appendChild(el('td', 'muted'));
        more.firstChild.colSpan = 5;
        body.appendChild(more);
      }
      more.dataset.n = String(already + cut);
      more.firstChild.textContent = `+ ${already + cut} more`;
    }
    const lists = [els.guessesLikely, els.guessesPlausible, els.guessesUnlikely];
    for (let guard = 0; guard < 500 && overflows(els.guessesPanel); guard++) {
      // From the list with the most guesses shown; on a tie the lowest (unlikely first).
      const fullest = lists
        .map((ul) => [ul, ul.querySelectorAll('.guess-item')])
        .reduce((best, x) => (x[1].length >= best[1].length ? x : best));
      if (!fullest[1].length) break;
      const [ul, items] = fullest;
      items[items.length - 1].remove();
      let more = ul.querySelector('.guess-more');
      if (!more) more = ul.appendChild(el('li', 'guess-more muted'));
      more.dataset.n = String((Number(more.dataset.n) || 0) + 1);
      more.textContent = `+${more.dataset.n} more`;
    }
  }

  let refitting = 0;
  window.addEventListener('resize', () => {
    cancelAnimationFrame(refitting);
    refitting = requestAnimationFrame(() => {
      if (S.state && S.state.phase === 'reveal' && root.dataset.screen === 'reveal') {
        root.classList.add('is-refitting'); // the same reveal: no bars growing, no pop again
        renderReveal(S.state); // all rows again, then as many as fit the new size
        fitReveal();
        if (S.cuts.on) fitCuts();
      }
    });
  });

  // ---------------------------------------------------------------- summary slide

  function renderSummary(st) {
    const s = st.summary || {};
    const mode = s.mode || modeOf(st);
    setLeaderboardHeads(mode);
    els.summaryTiles.textContent = '';
    const tile = (label, value, note, cls) => {
      const d = el('div', `tile${cls ? ` ${cls}` : ''}`);
      d.append(el('span', 'tile__label', label), el('span', 'tile__value', value));
      if (note) d.appendChild(el('span', 'tile__note', note));
      return d;
    };
    if (mode === 'pairwise' || mode === 'distribution') {
      renderJudgedSummary(st, s, mode, tile);
      return;
    }
    els.roundsTitle.textContent = 'Accuracy per round';
    els.summaryTiles.append(
      tile('Class accuracy', wholePct(s.class_accuracy), 'answers with the true token', 'tile--class'),
      tile('Most common answer', wholePct(s.plurality_accuracy), 'rounds the plurality got right', 'tile--class'),
      tile('Model accuracy', wholePct(s.model_accuracy), `${modelName}'s top pick`, 'tile--model'),
      tile('Players', String(s.n_players ?? 0)),
      tile('Answers', String(s.n_answers ?? 0)),
    );

    els.summaryRounds.textContent = '';
    const rounds = Array.isArray(s.rounds) ? s.rounds : [];
    for (const r of rounds) {
      const li = el('li', 'rbar');
      const label = el('span', 'rbar__label');
      label.append(el('span', 'rbar__num', `${r.number}`), chip(tokenText(r.target), 'chip--rbar'));
      li.appendChild(label);
      const bars = el('span', 'cbar__bars');
      const cls = Math.max(0, Math.min(1, Number(r.class_accuracy) || 0));
      const classLine = el('span', 'cbar__line cbar__line--class');
      const cf = el('span', 'cbar__fill');
      cf.style.width = `${(cls * 100).toFixed(1)}%`;
      classLine.append(cf, el('span', 'cbar__val', r.answered ? wholePct(cls) : 'no answers'));
      const modelLine = el('span', 'cbar__line cbar__line--model');
      const mf = el('span', 'cbar__fill');
      mf.style.width = r.model_correct ? '100%' : '0%';
      modelLine.append(mf, el('span', 'cbar__val', r.model_correct ? '✓ right' : '✗ wrong'));
      bars.append(classLine, modelLine);
      li.appendChild(bars);
      els.summaryRounds.appendChild(li);
    }
    if (!rounds.length) els.summaryRounds.appendChild(el('li', 'muted', 'No round was played.'));
    renderLeaderboard(els.finalLeaderBody, els.finalLeaderHidden, els.finalLeaderBody.closest('table'), st, MAX_LEADER_ROWS_FINAL);
  }

  /** The summary of a pairwise or distribution room: the chance the class and the model gave
   * to what came next, on average and per round. */
  function renderJudgedSummary(st, s, mode, tile) {
    els.summaryTiles.append(
      tile('Class', wholePct(s.class_true_probability), 'average chance given to what came next', 'tile--class'),
      tile(HIT_TILE[mode], wholePct(s.class_accuracy), mode === 'pairwise'
        ? 'answers that leaned to the original' : 'answers that named the true token', 'tile--class'),
      tile('Model', wholePct(s.model_true_probability), `${modelName}, the same question`, 'tile--model'),
      tile('Players', String(s.n_players ?? 0)),
      tile('Answers', String(s.n_answers ?? 0)),
    );
    els.roundsTitle.textContent = 'Chance given to what came next, per round';
    els.summaryRounds.textContent = '';
    const rounds = Array.isArray(s.rounds) ? s.rounds : [];
    const line = (cls, value, text) => {
      const span = el('span', `cbar__line cbar__line--${cls}`);
      const fill = el('span', 'cbar__fill');
      const known = value !== null && value !== undefined;
      fill.style.width = `${((known ? Math.max(0, Math.min(1, Number(value))) : 0) * 100).toFixed(1)}%`;
      span.append(fill, el('span', 'cbar__val', text));
      return span;
    };
    for (const r of rounds) {
      const li = el('li', 'rbar');
      const label = el('span', 'rbar__label');
      label.append(el('span', 'rbar__num', `${r.number}`), chip(tokenText(r.target), 'chip--rbar'));
      li.appendChild(label);
      const bars = el('span', 'cbar__bars');
      bars.append(
        line('class', r.class_true_probability, r.answered ? wholePct(r.class_true_probability) : 'no answers'),
        line('model', r.model_true_probability, pct(r.model_true_probability)),
      );
      li.appendChild(bars);
      els.summaryRounds.appendChild(li);
    }
    if (!rounds.length) els.summaryRounds.appendChild(el('li', 'muted', 'No round was played.'));
    renderLeaderboard(els.finalLeaderBody, els.finalLeaderHidden, els.finalLeaderBody.closest('table'), st, MAX_LEADER_ROWS_FINAL);
  }

  // ---------------------------------------------------------------- controls

  const PHASE_LABEL = {
    lobby: 'Lobby',
    answering: 'Answering',
    locked: 'Answers closed',
    reveal: 'Reveal',
    finished: 'Finished',
  };

  function primaryFor(st) {
    if (!st || st.status !== 'ready') return null;
    const round = st.round;
    const last = round && round.number >= round.total;
    switch (st.phase) {
      case 'lobby': return { action: 'start', label: 'Start the first round', hint: 'start' };
      case 'answering': return { action: 'lock', label: 'Close answers', hint: 'close answers' };
      case 'locked': return { action: 'reveal', label: 'Reveal the answer', hint: 'reveal' };
      case 'reveal': return last
        ? { action: 'finish', label: 'Show the summary', hint: 'summary' }
        : { action: 'next', label: 'Next round', hint: 'next round' };
      default: return null;
    }
  }

  function renderControls(st) {
    const p = primaryFor(st);
    S.primaryAction = p ? p.action : null;
    const showControls = !!st && st.status !== 'failed';
    els.controls.hidden = !showControls || st.status !== 'ready';
    els.settings.hidden = !showControls;
    els.primary.hidden = !p;
    if (p) {
      els.primary.textContent = '';
      els.primary.append(p.label, el('span', null, ' →'));
      els.primary.lastChild.setAttribute('aria-hidden', 'true');
      els.primary.dataset.action = p.action;
      els.primaryHint.textContent = p.hint;
    }
    els.primary.disabled = S.busy;
    els.primaryHint.parentElement.hidden = !p;
    const canFinish = st.status === 'ready' && st.phase === 'reveal' && p && p.action === 'next';
    els.finish.hidden = !canFinish;
    els.finish.textContent = 'Finish now';
    els.finish.disabled = S.busy;

    const settings = st.settings || {};
    els.histoToggle.setAttribute('aria-pressed', settings.show_histogram ? 'true' : 'false');
    els.leaderToggle.setAttribute('aria-pressed', settings.show_leaderboard ? 'true' : 'false');
    const locked = !!settings.joins_locked;
    els.lockToggle.setAttribute('aria-pressed', locked ? 'true' : 'false');
    els.joinrailLocked.hidden = !locked;
    root.dataset.joinsLocked = locked ? 'true' : 'false';
    const t = String(settings.timer_seconds || 0);
    if (![...els.timerSelect.options].some((o) => o.value === t)) {
      els.timerSelect.appendChild(el('option', null, `${t} s`)).value = t;
    }
    els.timerSelect.value = t;
    const finished = st.phase === 'finished';
    els.newRoom.hidden = !finished;
    els.histoToggle.hidden = finished;
    els.histoHint.hidden = finished;
    els.lockToggle.hidden = finished;
    els.lockHint.hidden = finished;
    els.timerSelect.parentElement.hidden = finished;
    els.playersMenu.hidden = st.phase === 'lobby' || finished;
  }

  async function act(action) {
    if (S.busy || !action) return;
    S.busy = true;
    els.primary.disabled = true;
    els.finish.disabled = true;
    els.primary.classList.add('is-loading');
    const resp = await call('host_action', { code, action });
    S.busy = false;
    els.primary.classList.remove('is-loading');
    if (!resp.ok) toast(resp.error);
    if (S.state) renderControls(S.state);
  }

  async function setting(change) {
    const resp = await call('host_settings', { code, ...change });
    if (!resp.ok) {
      toast(resp.error);
      if (S.state) renderControls(S.state);
    }
  }

  function toggleHistogram() {
    if (!S.state || S.state.phase === 'finished') return;
    const on = !(S.state.settings && S.state.settings.show_histogram);
    els.histoToggle.setAttribute('aria-pressed', on ? 'true' : 'false');
    setting({ show_histogram: on });
  }

  /** Lock the room against new joins (or open it again); seats that drop out still come back. */
  function toggleLock() {
    if (!S.state || S.state.phase === 'finished') return;
    const on = !(S.state.settings && S.state.settings.joins_locked);
    els.lockToggle.setAttribute('aria-pressed', on ? 'true' : 'false');
    setting({ joins_locked: on });
  }

  function toggleLeaderboard() {
    if (!S.state) return;
    const on = !(S.state.settings && S.state.settings.show_leaderboard);
    els.leaderToggle.setAttribute('aria-pressed', on ? 'true' : 'false');
    setting({ show_leaderboard: on });
  }

  // ---------------------------------------------------------------- whole state

  function render(st) {
    if (!st || typeof st !== 'object') return;
    const prev = S.state;
    S.state = st;
    const newRound = !prev || !prev.round || !st.round || prev.round.index !== st.round.index;
    if (newRound || prev.phase !== st.phase) S.answers = null;
    if (newRound || prev.phase !== st.phase) S.cuts.on = false; // each reveal opens on its chart
    if (st.answers && st.round) S.answers = { round: st.round.index, ...st.answers };

    renderPlayers(st.players);
    renderControls(st);

    const round = st.round;
    els.roundLabel.textContent = round ? `Round ${round.number} of ${round.total}` : `Room ${st.code || code}`;
    const status = st.status || 'ready';
    els.phaseBadge.textContent = status === 'preparing' ? 'Preparing'
      : status === 'failed' ? 'Failed' : (PHASE_LABEL[st.phase] || st.phase || '');
    els.phaseBadge.dataset.phase = status === 'ready' ? st.phase : status;
    root.dataset.phase = st.phase || '';

    if (status === 'preparing' && st.phase === 'lobby') {
      stopCountdown();
      setScreen('preparing');
      return;
    }
    if (status === 'failed') {
      stopCountdown();
      els.failedError.textContent = st.error || 'The model could not score the prompts.';
      setScreen('failed');
      return;
    }
    switch (st.phase) {
      case 'lobby': {
        stopCountdown();
        const n = (st.players || []).length;
        els.lobbyTitle.textContent = n ? `${plural(n, 'player has', 'players have')} joined` : 'Waiting for players…';
        const rounds = Number(st.rounds_total) || 0;
        els.lobbyLead.textContent = `${rounds ? `${plural(rounds, 'round', 'rounds')} ready. ` : ''}`
          + 'Names appear here as students join. Press Start when everyone is in.';
        setScreen('lobby');
        break;
      }
      case 'answering':
      case 'locked': {
        const answering = st.phase === 'answering';
        const mode = modeOf(st);
        root.dataset.mode = mode;
        els.roundAsk.textContent = answering ? (ASK[mode] || ASK.token) : 'Answers are closed';
        els.round.classList.toggle('round--locked', !answering);
        els.round.classList.toggle('round--pairwise', mode === 'pairwise');
        renderPair(round && round.pair, mode);
        if (newRound || !els.prefix.firstChild || prev.phase !== st.phase) renderPrefix(els.prefix, round && round.context);
        renderAnswers();
        if (answering) {
          if (newRound || !countdown.running || (prev.round && prev.round.deadline !== round.deadline)) startCountdown(round, st.phase);
        } else {
          stopCountdown();
        }
        setScreen('round');
        break;
      }
      case 'reveal':
        stopCountdown();
        if (newRound || prev.phase !== 'reveal') root.classList.remove('is-refitting');
        renderReveal(st);
        setScreen('reveal');
        fitReveal();
        break;
      case 'finished':
        stopCountdown();
        renderSummary(st);
        setScreen('finished');
        break;
      default:
        setScreen('connecting');
    }
    applyCuts();
  }

  function onAnswers(a) {
    if (!a || !S.state || !S.state.round || a.round !== S.state.round.index) return;
    S.answers = a;
    if (S.state.phase === 'answering' || S.state.phase === 'locked') renderAnswers();
  }

  // ---------------------------------------------------------------- keyboard

  document.addEventListener('keydown', (e) => {
    if (e.defaultPrevented || e.isComposing || e.ctrlKey || e.metaKey || e.altKey) return;
    if (els.removeDialog.open) return; // the dialog's own keys: Tab, Enter, Esc
    const t = e.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) return;
    const key = e.key;
    if (key === ' ' || key === 'Enter') {
      // A focused button, link or summary handles Space/Enter itself.
      if (t instanceof HTMLButtonElement || t instanceof HTMLAnchorElement || (t && t.tagName === 'SUMMARY')) return;
      if (e.repeat) { e.preventDefault(); return; }
      if (S.primaryAction && !els.controls.hidden) {
        e.preventDefault();
        act(S.primaryAction);
      }
      return;
    }
    if (e.repeat) return;
    if (key === 't' || key === 'T') { if (cutsAvailable(S.state)) { e.preventDefault(); toggleCuts(); } }
    else if (key === 'h' || key === 'H') { e.preventDefault(); toggleHistogram(); }
    else if (key === 'l' || key === 'L') { e.preventDefault(); toggleLeaderboard(); }
    else if (key === 'j' || key === 'J') { e.preventDefault(); toggleLock(); }
    else if (key === 'f' || key === 'F') {
      e.preventDefault();
      if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
      else if (document.documentElement.requestFullscreen) document.documentElement.requestFullscreen().catch(() => {});
    }
  });

  els.primary.addEventListener('click', () => act(els.primary.dataset.action));
  els.finish.addEventListener('click', () => act('finish'));
  els.histoToggle.addEventListener('click', toggleHistogram);
  els.leaderToggle.addEventListener('click', toggleLeaderboard);
  els.lockToggle.addEventListener('click', toggleLock);
  els.cutsToggle.addEventListener('click', toggleCuts);
  els.timerSelect.addEventListener('change', () => {
    const v = Number(els.timerSelect.value);
    setting({ timer_seconds: v > 0 ? v : null });
  });

  // ---------------------------------------------------------------- connection

  let hostToken = null;
  try { hostToken = localStorage.getItem(TOKEN_KEY); } catch (_) { hostToken = null; }
  if (!hostToken) {
    setScreen('nothost');
    return;
  }
  if (typeof window.io !== 'function') {
    els.nothostTitle.textContent = 'The live connection could not start';
    els.nothostText.textContent = 'The Socket.IO client script did not load (static/vendor/socket.io.min.js). Reload the page; if it persists, run "cd static && npm ci" on the server.';
    setScreen('nothost');
    return;
  }

  setScreen('connecting');
  const socket = window.io({ reconnectionDelayMax: 4000 });

  async function hostJoin() {
    const resp = await call('host_join', { code, host_token: hostToken });
    if (resp.ok && resp.state) {
      render(resp.state);
      return;
    }
    if (resp.ok === false && /did not answer|not connected/i.test(resp.error || '')) {
      toast(resp.error);
      return;
    }
    els.nothostTitle.textContent = `This browser cannot host room ${code}`;
    els.nothostText.textContent = resp.error || 'The server refused the host key stored in this browser.';
    els.controls.hidden = true;
    els.settings.hidden = true;
    setScreen('nothost');
  }

  socket.on('connect', () => {
    els.conn.hidden = true;
    hostJoin();
  });
  socket.on('disconnect', () => { els.conn.hidden = false; });
  socket.on('connect_error', () => { els.conn.hidden = false; });
  socket.on('host_state', (st) => render(st));
  socket.on('answers', (a) => onAnswers(a));
  socket.on('room_error', (e) => {
    if (e && e.event === 'host_join') return; // shown as the "not the host" screen
    toast(e && e.message);
  });
})();

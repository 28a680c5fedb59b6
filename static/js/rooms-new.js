/* humanlm: host set-up page of a classroom room. Plain ES2020, no dependencies. */
'use strict';

(() => {
  const form = document.getElementById('room-form');
  if (!form) return;

  const $ = (id) => document.getElementById(id);
  const els = {
    panelCorpus: $('panel-corpus'),
    panelPrompts: $('panel-prompts'),
    corpus: $('corpus'),
    rounds: $('rounds'),
    prompts: $('prompts'),
    promptsCount: $('prompts-count'),
    showHistogram: $('show-histogram'),
    showLeaderboard: $('show-leaderboard'),
    modePairwise: $('mode-pairwise'),
    modeNote: $('mode-note'),
    error: $('form-error'),
    errorMessage: $('form-error-message'),
    create: $('create-btn'),
  };

  const source = () => {
    const checked = form.querySelector('input[name="source"]:checked');
    return checked ? checked.value : 'prompts';
  };

  function showSource() {
    const s = source();
    els.panelCorpus.hidden = s !== 'corpus';
    els.panelPrompts.hidden = s !== 'prompts';
    showModes();
  }

  const answerMode = () => {
    const checked = form.querySelector('input[name="answer_mode"]:checked');
    return checked ? checked.value : 'token';
  };

  /** Why pairwise rounds cannot be played from here, or '' when they can: the pairs are drawn
   * from the model when a corpus is scored, so the teacher's own prompts (and a corpus scored
   * without alternatives) have none. */
  function pairwiseProblem() {
    if (source() === 'prompts') return 'Which came next? needs passages from a corpus: your own prompts have no tokens drawn from the model to compare with.';
    const option = els.corpus && els.corpus.selectedOptions ? els.corpus.selectedOptions[0] : null;
    if (option && option.dataset.pairwise === 'false') {
      return `Which came next? needs a corpus scored with drawn alternatives; ${option.value} has none.`;
    }
    return '';
  }

  function showModes() {
    const problem = pairwiseProblem();
    const radio = els.modePairwise.querySelector('input');
    radio.disabled = !!problem;
    if (problem && radio.checked) {
      radio.checked = false;
      form.querySelector('input[name="answer_mode"][value="token"]').checked = true;
    }
    els.modeNote.textContent = problem;
  }

  function promptLines() {
    return els.prompts.value.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  }

  function updateCount() {
    const n = promptLines().length;
    els.promptsCount.textContent = n ? `${n} round${n === 1 ? '' : 's'}` : '';
  }

  function showError(message, field) {
    const text = String(message || 'Unknown error.');
    els.errorMessage.textContent = text.charAt(0).toUpperCase() + text.slice(1);
    els.error.hidden = false;
    if (field) {
      field.setAttribute('aria-invalid', 'true');
      field.focus();
    } else {
      els.error.focus();
    }
  }

  function clearError() {
    els.error.hidden = true;
    form.querySelectorAll('[aria-invalid]').forEach((n) => n.removeAttribute('aria-invalid'));
  }

  function timerSeconds() {
    const checked = form.querySelector('input[name="timer"]:checked');
    const v = checked ? Number(checked.value) : 0;
    return v > 0 ? v : null;
  }

  /** Build the POST /api/rooms body, or show what to fix and return null. */
  function buildBody() {
    const body = {
      source: source(),
      timer_seconds: timerSeconds(),
      show_histogram: els.showHistogram.checked,
      show_leaderboard: els.showLeaderboard.checked,
      answer_mode: answerMode(),
    };
    if (body.source === 'corpus') {
      if (!els.corpus || !els.corpus.value) {
        showError('Choose a corpus.', els.corpus);
        return null;
      }
      const rounds = Number(els.rounds.value);
      const most = Number(els.rounds.max) || Infinity; // the server's limit, from the template
      if (!Number.isInteger(rounds) || rounds < 1 || rounds > most) {
        showError(`The number of rounds must be a whole number from 1 to ${els.rounds.max}.`, els.rounds);
        return null;
      }
      body.corpus = els.corpus.value;
      body.rounds = rounds;
    } else {
      if (promptLines().length === 0) {
        showError('Type at least one prompt (one per line).', els.prompts);
        return null;
      }
      body.prompts = els.prompts.value;
    }
    return body;
  }

  let busy = false;
  let leaving = false;

  async function submit() {
    if (busy) return;
    clearError();
    const body = buildBody();
    if (!body) return;
    busy = true;
    els.create.disabled = true;
    els.create.classList.add('is-loading');
    try {
      let res;
      try {
        res = await fetch('/api/rooms', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify(body),
          credentials: 'same-origin',
          cache: 'no-store',
        });
      } catch (_) {
        showError('Could not reach the server. Check the connection and try again.');
        return;
      }
      let data = null;
      try { data = await res.json(); } catch (_) { data = null; }
      if (res.status !== 201 && !res.ok) {
        const msg = data && typeof data.error === 'string' && data.error
          ? data.error
          : `The server answered with an error (HTTP ${res.status}).`;
        const field = /prompt/i.test(msg) ? els.prompts
          : /round/i.test(msg) ? els.rounds
            : /corpus/i.test(msg) ? els.corpus : null;
        showError(msg, field && !field.closest('[hidden]') ? field : null);
        return;
      }
      if (!data || !data.code || !data.host_token) {
        showError('The server sent a response this page could not read.');
        return;
      }
      try {
        localStorage.setItem(`humanlm.host.${data.code}`, data.host_token);
      } catch (_) {
        showError('This browser does not allow storing the host key (private mode?). Allow site data and try again.');
        return;
      }
      leaving = true;
      window.location.assign(data.host_url || `/rooms/${encodeURIComponent(data.code)}/host`);
    } finally {
      if (!leaving) { // stay busy while the host page loads
        busy = false;
        els.create.disabled = false;
        els.create.classList.remove('is-loading');
      }
    }
  }

  form.addEventListener('change', (e) => {
    if (e.target && e.target.name === 'source') {
      showSource();
      clearError();
    }
    if (e.target === els.corpus) showModes();
  });
  form.addEventListener('input', (e) => {
    if (e.target && e.target.getAttribute('aria-invalid')) e.target.removeAttribute('aria-invalid');
    if (e.target === els.prompts) updateCount();
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });
  // Ctrl/Cmd+Enter in the prompts box creates the room (Enter alone adds a line).
  els.prompts.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      submit();
    }
  });

  showSource();
  updateCount();
})();

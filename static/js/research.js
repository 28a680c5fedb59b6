/* humanlm: researcher pages (dashboard, study set-up, study page). Plain ES2020.
 * Copy buttons, the set-up form's mode-dependent hint, live headline numbers (with the answers
 * awaiting the model's numbers) and the scoring progress of uploaded passages. */
'use strict';

(() => {
  // Bars are sized from data attributes (the Content-Security-Policy allows no inline styles).
  document.querySelectorAll('[data-width]').forEach((el) => { el.style.width = `${el.dataset.width}%`; });
  document.querySelectorAll('[data-height]').forEach((el) => { el.style.height = `${el.dataset.height}%`; });

  // Copy the value of an input (data-copy="input id").
  document.querySelectorAll('[data-copy]').forEach((btn) => {
    btn.addEventListener('click', async () => {
      const input = document.getElementById(btn.dataset.copy);
      if (!input) return;
      try {
        await navigator.clipboard.writeText(input.value);
        btn.textContent = 'Copied';
      } catch (_) {
        input.select();
        btn.textContent = 'Press Ctrl+C';
      }
      setTimeout(() => { btn.textContent = 'Copy'; }, 2000);
    });
  });

  // Set-up form: the default instructions follow the chosen mode; the sample size picks "sample".
  const instructions = document.getElementById('instructions');
  if (instructions) {
    document.querySelectorAll('input[name="mode"]').forEach((radio) => {
      radio.addEventListener('change', () => {
        instructions.placeholder = radio.value === 'word'
          ? instructions.dataset.defaultWord : instructions.dataset.defaultToken;
      });
    });
  }
  const sample = document.querySelector('input[name="sample_size"]');
  if (sample) {
    sample.addEventListener('input', () => {
      const radio = document.querySelector('input[name="items_choice"][value="sample"]');
      if (radio) radio.checked = true;
    });
  }
  const errors = document.getElementById('form-errors');
  if (errors) errors.focus();

  // Passages page: rows whose scoring job is under way poll their progress every 2 seconds.
  const fmtInt = (n) => Number(n).toLocaleString('en');
  document.querySelectorAll('tr[data-progress-url]').forEach((row) => {
    const bar = row.querySelector('.meter__fill');
    const meter = row.querySelector('[role="progressbar"]');
    const part = (name) => row.querySelector(`[data-p="${name}"]`);
    async function poll() {
      try {
        const res = await fetch(row.dataset.progressUrl, { headers: { Accept: 'application/json' }, cache: 'no-store' });
        if (res.status === 401) { part('state').textContent = 'session expired: reload to log in'; return; }
        if (!res.ok) throw new Error(String(res.status));
        const data = await res.json();
        const pctDone = Math.round(1000 * data.fraction) / 10;
        if (bar) bar.style.width = `${pctDone}%`;
        if (meter) meter.setAttribute('aria-valuenow', String(Math.round(pctDone)));
        part('scored_documents').textContent = fmtInt(data.scored_documents);
        part('documents').textContent = fmtInt(data.documents);
        part('state').textContent = data.state;
        const error = part('error');
        if (error) { error.textContent = data.error || ''; error.hidden = !data.error; }
        if (data.active) setTimeout(poll, 2000);
        else row.classList.remove('is-active');
      } catch (_) {
        setTimeout(poll, 5000);
      }
    }
    setTimeout(poll, 1000);
  });

  // Study page: refresh the headline numbers every 5 seconds.
  const live = document.getElementById('live');
  if (!live || !live.dataset.summaryUrl) return;
  const status = document.getElementById('live-status');
  const get = (obj, path) => path.split('.').reduce((o, k) => (o == null ? o : o[k]), obj);
  const fmt = (value, kind) => {
    if (value === null || value === undefined) return '–';
    if (kind === 'pct') return `${Math.round(value * 100)}%`;
    if (kind === 'min') return `${value.toFixed(1)} min`;
    if (kind === 'sec') return `${(value / 1000).toFixed(1)} s`;
    return String(value);
  };
  async function refresh() {
    if (document.hidden) return;
    try {
      const res = await fetch(live.dataset.summaryUrl, { headers: { Accept: 'application/json' }, cache: 'no-store' });
      if (res.status === 401) { status.textContent = 'session expired: reload to log in'; return; }
      if (!res.ok) throw new Error(String(res.status));
      const data = await res.json();
      document.querySelectorAll('[data-k]').forEach((el) => {
        el.textContent = fmt(get(data, el.dataset.k), el.dataset.fmt);
      });
      const numbers = data.model_numbers || {};
      const box = document.getElementById('model-numbers');
      if (box) {
        box.hidden = !numbers.total;
        box.classList.toggle('is-stalled', !!numbers.stalled);
        document.getElementById('model-numbers-stalled').hidden = !numbers.stalled;
        document.getElementById('model-numbers-left').hidden = !numbers.not_computable;
      }
      status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (_) {
      status.textContent = 'could not update; retrying';
    }
  }
  setInterval(refresh, 5000);
})();

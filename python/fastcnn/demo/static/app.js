// The fastcnn demo page: builds the controls from GET /api/config, starts and stops runs, and draws the state
// that the server streams (GET /api/events). The state lives in the server, so a reload rejoins the run.
// A plain ES module with no dependencies: charts are drawn on <canvas>, the pictures arrive as PNG data URIs.

const $ = (id) => document.getElementById(id);
const COLORS = { training: '#1f77b4', validation: '#d95f02', grid: '#e3e7ee', text: '#5b6577' };
const controls = {}; // name -> { spec, input, output, read(), write(value) }
let config = null;
let lastState = null;
let adopted = false; // the controls took the server's settings once (after a reload during a run)
let shownError = null; // the run whose error is already in the message box
let resultsRun = null; // the run whose results are drawn

// --------------------------------------------------------------------------------------------------- the API

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch { /* an empty or non-JSON answer */ }
  if (!response.ok) throw new Error(data?.error ?? `${path}: HTTP ${response.status}`);
  return data;
}

function showMessage(text) {
  $('message').textContent = text || '';
  $('message').hidden = !text;
}

// ---------------------------------------------------------------------------------------------- the controls

function element(tag, attributes = {}, text = '') {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

// The learning rate slider moves along 1-2-5 steps between the table's bounds: 0.0001, 0.0002, 0.0005, 0.001, ...
function logSteps(min, max) {
  const steps = [];
  for (let exponent = Math.floor(Math.log10(min)); exponent <= Math.ceil(Math.log10(max)); exponent += 1) {
    for (const mantissa of [1, 2, 5]) {
      const value = Number((mantissa * 10 ** exponent).toPrecision(1));
      if (value >= min * (1 - 1e-9) && value <= max * (1 + 1e-9)) steps.push(value);
    }
  }
  return steps;
}

function buildControl(spec) {
  const id = `control-${spec.name}`;
  const wrapper = element('div', { class: 'control' });
  const label = element('label', { for: id }, spec.label);
  const output = element('output', { for: id, id: `${id}-value` });
  let input;
  let read = () => Number(input.value);
  let write = (value) => { input.value = String(value); };
  if (spec.kind === 'select') {
    input = element('select');
    for (const choice of spec.choices) input.append(new Option(String(choice), String(choice)));
  } else if (spec.kind === 'log-range') {
    const steps = logSteps(spec.min, spec.max);
    input = element('input', { type: 'range', min: 0, max: steps.length - 1, step: 1 });
    read = () => steps[Number(input.value)];
    write = (value) => {
      const distances = steps.map((step) => Math.abs(Math.log(step) - Math.log(value)));
      input.value = String(distances.indexOf(Math.min(...distances)));
    };
  } else {
    const min = spec.choices ? spec.choices[0] : spec.min;
    const max = spec.choices ? spec.choices[spec.choices.length - 1] : spec.max;
    input = element('input', { type: spec.kind === 'number' ? 'number' : 'range', min, max, step: 1 });
    // A number box may hold anything; an empty or odd entry goes to the server as typed, to be refused there.
    if (spec.kind === 'number') read = () => (input.value.trim() === '' ? input.value : Number(input.value));
  }
  input.id = id;
  input.name = spec.name;
  input.title = `${spec.help}: ${spec.rule}`;
  const show = () => { output.value = String(read()); };
  input.addEventListener('input', show);
  input.addEventListener('change', show);
  wrapper.append(label, output, input);
  controls[spec.name] = { spec, input, output, read, write: (value) => { write(value); show(); } };
  controls[spec.name].write(spec.default);
  return wrapper;
}

function buildControls() {
  const select = $('dataset');
  for (const dataset of config.datasets) select.append(new Option(dataset.title, dataset.name));
  select.value = config.default_dataset;
  for (const spec of config.controls) $('controls').append(buildControl(spec));
}

function readSettings() {
  const settings = { dataset: $('dataset').value };
  for (const [name, control] of Object.entries(controls)) settings[name] = control.read();
  return settings;
}

function adoptSettings(state) {
  if (state.dataset) $('dataset').value = state.dataset;
  for (const [name, value] of Object.entries(state.params || {})) controls[name]?.write(value);
}

// ---------------------------------------------------------------------------------------------- the status

const percent = (value) => (value == null ? '–' : `${(100 * value).toFixed(1)}%`);
const number = (value, digits = 3) => (value == null ? '–' : value.toFixed(digits));

function statusText(state) {
  const progress = state.epoch > 0
    ? [`Epoch ${state.epoch} of ${state.epochs}`, `batch ${state.batch} of ${state.batches}`,
      `loss ${number(state.loss)}`, `accuracy ${percent(state.accuracy)}`,
      `${Math.round(state.images_per_second ?? 0).toLocaleString('en')} images/s`].join(' · ')
    : state.message;
  switch (state.status) {
    case 'running': return state.epoch > 0 ? `Training: ${progress}` : `Training: ${state.message}…`;
    case 'stopping': return `Stopping: ${progress}`;
    case 'done': {
      const accuracy = state.results ? ` · test accuracy ${percent(state.results.accuracy)}` : '';
      return `${state.stopped ? 'Stopped' : 'Done'}: ${state.message}${accuracy} · ${state.elapsed.toFixed(1)} s`;
    }
    case 'error': return `Error: ${state.message}`;
    default: return `Ready: ${state.message}.`;
  }
}

function renderStatus(state) {
  const status = $('status');
  status.textContent = statusText(state);
  status.dataset.state = state.status;
  status.dataset.epoch = state.epoch;
  status.dataset.batch = state.batch;
  const fraction = state.epochs && state.batches ? (state.epoch - 1 + state.batch / state.batches) / state.epochs : 0;
  $('progress').value = state.status === 'done' && !state.stopped ? 1 : Math.max(0, Math.min(1, fraction));
  const busy = state.status === 'running' || state.status === 'stopping';
  $('train').disabled = busy;
  $('stop').disabled = state.status !== 'running';
  if (state.status === 'error' && shownError !== state.run) {
    shownError = state.run;
    showMessage(state.message);
  }
}

// ---------------------------------------------------------------------------------------------- the charts

function drawChart(canvas, { xMax, yMax, format, series }) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 440;
  const height = canvas.clientHeight || 240;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext('2d');
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.fillStyle = '#fff';
  context.fillRect(0, 0, width, height);
  const left = 46; const right = 12; const top = 10; const bottom = 28;
  const x = (value) => left + (value / xMax) * (width - left - right);
  const y = (value) => height - bottom - (value / yMax) * (height - top - bottom);

  context.font = '11px system-ui, sans-serif';
  context.lineWidth = 1;
  context.strokeStyle = COLORS.grid;
  context.fillStyle = COLORS.text;
  context.textAlign = 'right';
  context.textBaseline = 'middle';
  for (let i = 0; i <= 4; i += 1) {
    const value = (yMax * i) / 4;
    context.beginPath(); context.moveTo(left, y(value)); context.lineTo(width - right, y(value)); context.stroke();
    context.fillText(format(value), left - 6, y(value));
  }
  context.textAlign = 'center';
  context.textBaseline = 'top';
  const every = Math.max(1, Math.ceil(xMax / 10));
  for (let epoch = 0; epoch <= xMax; epoch += every) context.fillText(String(epoch), x(epoch), height - bottom + 6);
  context.textAlign = 'right';
  context.fillText('epoch', width - right, height - 12);

  for (const line of series) {
    const points = line.xs.map((value, i) => [value, line.ys[i]]).filter(([, value]) => value != null);
    context.strokeStyle = line.color;
    context.fillStyle = line.color;
    context.lineWidth = 2;
    context.setLineDash(line.dashed ? [5, 4] : []);
    context.beginPath();
    points.forEach(([px, py], i) => (i ? context.lineTo(x(px), y(py)) : context.moveTo(x(px), y(py))));
    context.stroke();
    context.setLineDash([]);
    if (line.dots) {
      for (const [px, py] of points) {
        context.beginPath(); context.arc(x(px), y(py), 3.5, 0, 2 * Math.PI); context.fill();
      }
    }
  }
}

function renderCharts(state) {
  const { live, history } = state;
  const xMax = Math.max(1, state.epochs || 1);
  const curve = (key) => [
    { xs: live.x, ys: live[key], color: COLORS.training },
    { xs: history.epoch, ys: history[`val_${key}`] || [], color: COLORS.validation, dashed: true, dots: true },
  ];
  const losses = [...live.loss, ...(history.val_loss || [])].filter((value) => value != null);
  const lossMax = losses.length ? Math.max(0.5, ...losses) * 1.1 : 2.5;
  drawChart($('loss-chart'), { xMax, yMax: lossMax, format: (v) => v.toFixed(2), series: curve('loss') });
  const asPercent = (v) => `${Math.round(100 * v)}%`;
  drawChart($('accuracy-chart'), { xMax, yMax: 1, format: asPercent, series: curve('accuracy') });
}

// ----------------------------------------------------------------------------------------------- the views

function showImage(image, view, size) {
  if (!view) { image.hidden = true; return; }
  if (image.getAttribute('src') !== view.src) image.src = view.src;
  const scale = Math.max(1, Math.floor(size / Math.max(view.width, view.height)));
  image.width = view.width * scale;
  image.height = view.height * scale;
  image.hidden = false;
}

function renderViews(views) {
  const names = ['filters-caption', 'maps-caption', 'pooled-caption'];
  if (!views) {
    for (const id of ['filters', 'feature-maps', 'pooled-maps', 'sample-image']) $(id).hidden = true;
    names.forEach((id, i) => { $(id).textContent = i === 0 ? 'Press Train to see the filters learn.' : ''; });
    return;
  }
  showImage($('filters'), views.filters, 320);
  showImage($('feature-maps'), views.feature_maps, 320);
  showImage($('pooled-maps'), views.pooled_maps, 320);
  showImage($('sample-image'), views.image, 112);
  const size = (shape) => `${shape[1]}×${shape[2]}`;
  const params = lastState?.params ?? {};
  const k = params.filter_size ?? '?';
  const bound = views.filters.vmax.toPrecision(2);
  $('filters-caption').textContent = `${views.filters.count} filters of ${k}×${k}; `
    + `black is −${bound}, white +${bound}`;
  $('maps-caption').textContent = `${views.feature_maps.shape[0]} maps of ${size(views.feature_maps.shape)}`;
  $('pooled-caption').textContent = `${views.pooled_maps.shape[0]} maps of ${size(views.pooled_maps.shape)}`
    + ` (pooled from ${size(views.pooled_maps.input_shape)})`;
  const confidence = views.prediction.probabilities[views.prediction.label];
  $('sample-label').textContent = `Test image ${views.sample}: ${views.label_name}. `
    + `The network says ${views.prediction.name} (${percent(confidence)}).`;
  const input = $('sample-index');
  if (document.activeElement !== input) input.value = String(views.sample);
}

async function chooseSample(index) {
  try {
    const answer = await api('/api/sample', { index });
    $('sample-index').value = String(answer.sample);
    if (answer.views) renderViews(answer.views);
  } catch (error) {
    showMessage(error.message);
  }
}

// --------------------------------------------------------------------------------------------- the results

function renderResults(state) {
  const { results } = state;
  $('results').hidden = !results;
  if (!results || resultsRun === state.run) return;
  resultsRun = state.run;
  const names = results.class_names;
  $('results-summary').textContent = `Test accuracy ${percent(results.accuracy)} `
    + `on ${results.test_images} test images.`;
  const table = $('confusion');
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  head.append(element('th', { scope: 'col' }, 'true \\ predicted'));
  names.forEach((name, i) => head.append(element('th', { scope: 'col', title: name }, String(i))));
  const body = table.createTBody();
  results.confusion_matrix.forEach((counts, truth) => {
    const row = body.insertRow();
    const label = names[truth] === String(truth) ? String(truth) : `${truth} ${names[truth]}`;
    row.append(element('th', { scope: 'row', title: names[truth] }, label));
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    counts.forEach((count) => {
      const cell = row.insertCell();
      cell.textContent = String(count);
      const share = count / total;
      cell.style.backgroundColor = `rgba(31, 119, 180, ${share.toFixed(3)})`;
      if (share > 0.55) cell.style.color = '#fff';
    });
  });
  const list = $('predictions');
  list.replaceChildren();
  for (const prediction of results.predictions) {
    const item = element('li', { class: prediction.predicted === prediction.true ? 'right' : 'wrong' });
    const image = element('img', { src: prediction.image, width: 56, height: 56, class: 'pixelated',
      alt: `test image ${prediction.index}` });
    item.append(image, element('div', {}, `predicted ${names[prediction.predicted]}`),
      element('div', {}, `true ${names[prediction.true]}`));
    list.append(item);
  }
}

// ----------------------------------------------------------------------------------------------- the state

function render(state) {
  lastState = state;
  if (!adopted && state.run > 0) {
    adopted = true;
    adoptSettings(state);
  }
  renderStatus(state);
  renderCharts(state);
  if ('views' in state) renderViews(state.views);
  renderResults(state);
  $('sample-index').max = String(state.sample_count - 1);
}

function connect() {
  const source = new EventSource('/api/events');
  source.onmessage = (event) => render(JSON.parse(event.data));
  source.onerror = () => {
    if (source.readyState !== EventSource.OPEN) {
      $('status').textContent = 'The connection to the server was lost; retrying…';
      $('status').dataset.state = 'disconnected';
    }
  };
}

async function start() {
  try {
    config = await api('/api/config');
  } catch (error) {
    showMessage(`Cannot load the settings from the server: ${error.message}`);
    return;
  }
  buildControls();
  $('settings').addEventListener('submit', async (event) => {
    event.preventDefault();
    showMessage('');
    try {
      adopted = true;
      render(await api('/api/train', readSettings()));
    } catch (error) {
      showMessage(error.message);
    }
  });
  $('stop').addEventListener('click', async () => {
    try { render(await api('/api/stop', {})); } catch (error) { showMessage(error.message); }
  });
  const current = () => Number($('sample-index').value) || 0;
  $('previous-sample').addEventListener('click', () => chooseSample(Math.max(0, current() - 1)));
  $('next-sample').addEventListener('click', () => {
    chooseSample(Math.min((lastState?.sample_count ?? config.test_size) - 1, current() + 1));
  });
  $('sample-index').addEventListener('change', (event) => {
    const { value } = event.target;
    chooseSample(value.trim() === '' ? value : Number(value));
  });
  try {
    render(await api('/api/state'));
  } catch (error) {
    showMessage(error.message);
  }
  connect();
}

start();

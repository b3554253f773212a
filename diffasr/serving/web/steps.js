// The canvas step by step (verbose_json's `canvas_steps`, decoding/steps.py) and the words on the
// waveform. No library: plain DOM and SVG, so the page works offline.
//
//   showSteps(strip, steps)            one row per step, added one after another (noise -> text);
//                                      a token's colour is its confidence, its style its status
//   showWaveform(svg, blob, words, player)  the clip's envelope with each word at its time;
//                                      clicking a word plays its span in `player` (an <audio>)
"use strict";

// confidence 0 -> red, 0.5 -> amber, 1 -> green (HSL hue 0..130), light enough to read dark text on
function confidenceColour(c) {
  const hue = Math.round(130 * Math.max(0, Math.min(1, c)));
  return `hsl(${hue}, 70%, 82%)`;
}

const STEP_DELAY_MS = 180;  // between two rows of the animation

function stepRow(step, segments) {
  const row = document.createElement("div");
  row.className = "step-row";
  row.dataset.step = step.step;
  const label = document.createElement("span");
  label.className = "step-label";
  label.textContent = (segments > 1 ? `${step.segment + 1}·` : "") + step.step;
  row.appendChild(label);
  step.tokens.forEach((text, i) => {
    const tok = document.createElement("span");
    const status = step.status[i];
    tok.className = "tok " + status;
    tok.textContent = text === "<|endoftext|>" ? "⏎" : text.replace(/ /g, "\u00a0");
    tok.title = `${status}, confidence ${step.confidence[i].toFixed(2)}`;
    tok.style.background = status === "kept" || status === "rejected" ? confidenceColour(step.confidence[i]) : "";
    row.appendChild(tok);
  });
  return row;
}

function showSteps(strip, steps) {
  clearTimeout(strip.timer);
  strip.replaceChildren();
  if (!steps || !steps.length) { strip.hidden = true; return; }
  strip.hidden = false;
  const segments = new Set(steps.map((s) => s.segment)).size;
  let k = 0;
  const next = () => {
    strip.appendChild(stepRow(steps[k], segments));
    k += 1;
    if (k < steps.length) strip.timer = setTimeout(next, STEP_DELAY_MS);
    else strip.dataset.done = "1";
  };
  strip.dataset.done = "";
  next();
}

// The envelope: per pixel column, the largest |sample| in its slice of the (first) channel.
async function envelope(blob, columns) {
  const ctx = new OfflineAudioContext(1, 1, 16000);
  const buf = await ctx.decodeAudioData(await blob.arrayBuffer());
  const x = buf.getChannelData(0);
  const per = Math.max(1, Math.floor(x.length / columns));
  const peaks = new Float32Array(columns);
  for (let c = 0; c < columns; c++) {
    let m = 0;
    for (let i = c * per; i < Math.min(x.length, (c + 1) * per); i++) m = Math.max(m, Math.abs(x[i]));
    peaks[c] = m;
  }
  return { peaks, seconds: buf.duration };
}

function svgEl(name, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

let spanEnd = null;  // where the word being played ends (seconds)

function playSpan(player, start, end) {
  spanEnd = end;
  player.currentTime = start;
  player.play().catch(() => {});
}

async function showWaveform(svg, blob, words, duration, player) {
  svg.replaceChildren();
  const W = 800, H = 120, mid = 50;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  let seconds = duration;
  try {
    const env = await envelope(blob, W);
    seconds = env.seconds || duration;
    const max = Math.max(1e-4, ...env.peaks);
    let d = "";
    env.peaks.forEach((p, c) => { const h = (p / max) * (mid - 4); d += `M${c} ${mid - h}V${mid + h}`; });
    svg.appendChild(svgEl("path", { d, class: "wave" }));
  } catch (err) {  // a format the browser cannot decode: the words alone
    svg.appendChild(svgEl("line", { x1: 0, y1: mid, x2: W, y2: mid, class: "wave" }));
  }
  const x = (t) => (t / Math.max(seconds, 1e-3)) * W;
  words.forEach((w, i) => {
    const g = svgEl("g", { class: "word", "data-start": w.start, "data-end": w.end });
    const x0 = x(w.start), x1 = Math.max(x(w.end), x0 + 2);
    g.appendChild(svgEl("rect", { x: x0, y: 2, width: x1 - x0, height: mid * 2 - 4, fill: confidenceColour(w.confidence) }));
    const label = svgEl("text", { x: (x0 + x1) / 2, y: i % 2 ? H - 4 : H - 16, "text-anchor": "middle" });
    label.textContent = w.word;
    g.appendChild(label);
    const title = svgEl("title", {});
    title.textContent = `${w.word}: ${w.start.toFixed(2)}–${w.end.toFixed(2)} s, confidence ${w.confidence.toFixed(2)}`;
    g.appendChild(title);
    g.addEventListener("click", () => playSpan(player, w.start, w.end));
    svg.appendChild(g);
  });
  svg.dataset.words = String(words.length);
}

function watchSpans(player) {  // stop at the end of the word being played
  player.addEventListener("timeupdate", () => {
    if (spanEnd !== null && player.currentTime >= spanEnd) { player.pause(); spanEnd = null; }
  });
}

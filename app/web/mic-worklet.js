// AudioWorklet for the page's microphone button: mixes to mono, low-passes below the new
// Nyquist frequency (two cascaded biquads, 4th order), resamples from the context's rate to
// `targetRate` by linear interpolation, and posts little-endian PCM16 chunks of `chunkSamples`
// (100 ms at 16 kHz) to the page, which sends them to the feed as binary frames.
"use strict";

function lowpass(cutoffHz, rate) {  // RBJ cookbook biquad, Q = 1/sqrt(2)
  const w = (2 * Math.PI * cutoffHz) / rate, alpha = Math.sin(w) / Math.SQRT2, cos = Math.cos(w);
  const a0 = 1 + alpha;
  return { b0: (1 - cos) / 2 / a0, b1: (1 - cos) / a0, b2: (1 - cos) / 2 / a0,
           a1: (-2 * cos) / a0, a2: (1 - alpha) / a0, x1: 0, x2: 0, y1: 0, y2: 0 };
}

function filter(f, x) {
  const y = f.b0 * x + f.b1 * f.x1 + f.b2 * f.x2 - f.a1 * f.y1 - f.a2 * f.y2;
  f.x2 = f.x1; f.x1 = x; f.y2 = f.y1; f.y1 = y;
  return y;
}

class Pcm16Resampler extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.targetRate = o.targetRate || 16000;
    this.chunkSamples = o.chunkSamples || 1600;
    this.step = sampleRate / this.targetRate;  // input samples per output sample
    this.filters = sampleRate > this.targetRate
      ? [lowpass(0.45 * this.targetRate, sampleRate), lowpass(0.45 * this.targetRate, sampleRate)] : [];
    this.t = 0;        // position of the next output sample, in input samples from this block's start
    this.prev = 0;     // the previous block's last (filtered) sample, at position -1
    this.out = new Int16Array(this.chunkSamples);
    this.fill = 0;
  }

  emit(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.out[this.fill++] = v < 0 ? v * 32768 : v * 32767;
    if (this.fill === this.chunkSamples) {
      this.port.postMessage(this.out.buffer, [this.out.buffer]);
      this.out = new Int16Array(this.chunkSamples);
      this.fill = 0;
    }
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const n = channels[0].length;
    const x = new Float32Array(n);
    for (const ch of channels) for (let i = 0; i < n; i++) x[i] += ch[i] / channels.length;
    for (const f of this.filters) for (let i = 0; i < n; i++) x[i] = filter(f, x[i]);
    while (this.t < n - 1) {
      const i = Math.floor(this.t), frac = this.t - i;
      const a = i < 0 ? this.prev : x[i];
      this.emit(a + (x[i + 1] - a) * frac);
      this.t += this.step;
    }
    this.t -= n;
    this.prev = x[n - 1];
    return true;
  }
}

registerProcessor("pcm16-resampler", Pcm16Resampler);

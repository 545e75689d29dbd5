/**
 * Progress display of long CLI runs: a cli-progress bar with ETA on a
 * terminal, plain line logs otherwise (CI, pipes, files).
 */
import cliProgress from 'cli-progress';

/** Values shown next to the bar. */
export interface ProgressPayload {
  [key: string]: string | number;
}

/** A per-phase progress display (one bar per epoch / evaluation). */
export interface Progress {
  /** Starts a phase of `total` steps. `title` e.g. `epoch 2/5`. */
  start(title: string, total: number, payload?: ProgressPayload): void;
  /** Sets the number of steps done. */
  update(done: number, payload?: ProgressPayload): void;
  /** Ends the phase. */
  stop(): void;
  /** Prints a line (above the bar when one is shown). */
  log(line: string): void;
}

function fmtPayload(p: ProgressPayload | undefined): string {
  if (!p) return '';
  return Object.entries(p)
    .map(([k, v]) => `${k} ${typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(4)) : v}`)
    .join(' | ');
}

function fmtSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${Math.round(s)}s`;
  return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
}

/**
 * Creates the progress display. `mode: 'auto'` shows a bar when stdout is a
 * terminal and plain lines (at most one every `intervalSeconds`, and at the
 * end of each phase) otherwise; `'bar'`/`'lines'` force one; `'off'` prints
 * only `log` lines.
 */
export function createProgress(mode: 'auto' | 'bar' | 'lines' | 'off' = 'auto', intervalSeconds = 10): Progress {
  const stream = process.stdout;
  const useBar = mode === 'bar' || (mode === 'auto' && stream.isTTY === true);
  if (useBar) {
    let bar: cliProgress.SingleBar | null = null;
    return {
      start(title, total, payload) {
        bar?.stop();
        bar = new cliProgress.SingleBar(
          {
            format: `${title} [{bar}] {value}/{total} | ETA {eta_formatted} | {info}`,
            stream,
            hideCursor: true,
            clearOnComplete: false,
            etaBuffer: 20,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, 0, {info: fmtPayload(payload)});
      },
      update(done, payload) {
        bar?.update(done, {info: fmtPayload(payload)});
      },
      stop() {
        bar?.stop();
        bar = null;
      },
      log(line) {
        if (bar) {
          // cli-progress has no log-above API for a SingleBar: clear the line, print, redraw.
          stream.write('\r\x1b[2K');
          stream.write(`${line}\n`);
          bar.render();
        } else {
          stream.write(`${line}\n`);
        }
      },
    };
  }
  let title = '';
  let total = 0;
  let t0 = 0;
  let last = 0;
  let lastDone = 0;
  let lastPayload: ProgressPayload | undefined;
  const line = (done: number, payload?: ProgressPayload) => {
    const elapsed = (Date.now() - t0) / 1000;
    const eta = done > 0 ? (elapsed / done) * (total - done) : NaN;
    const info = fmtPayload(payload);
    stream.write(`${title} ${done}/${total} | ${fmtSeconds(elapsed)} elapsed, ETA ${fmtSeconds(eta)}${info ? ` | ${info}` : ''}\n`);
  };
  return {
    start(t, n, payload) {
      title = t;
      total = n;
      t0 = Date.now();
      last = t0;
      lastDone = 0;
      lastPayload = payload;
    },
    update(done, payload) {
      lastDone = done;
      lastPayload = payload ?? lastPayload;
      if (mode === 'off') return;
      if (Date.now() - last >= intervalSeconds * 1000) {
        last = Date.now();
        line(done, lastPayload);
      }
    },
    stop() {
      if (mode !== 'off' && total > 0) line(lastDone, lastPayload);
      total = 0;
    },
    log(l) {
      stream.write(`${l}\n`);
    },
  };
}

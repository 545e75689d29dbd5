/**
 * `--baseline <git ref>` of the benches: extracts `src/` of the ref once under
 * scratch/baseline/<commit>/ so that a bench can import the package's source at that ref next to
 * the working tree's.
 */
import {spawnSync} from 'node:child_process';

/** Resolves `ref`, extracts its `src/` (once) and returns the directory holding it and the short commit. */
export function extractBaseline(ref: string): {dir: string; commit: string} {
  const root = new URL('..', import.meta.url).pathname;
  const rev = spawnSync('git', ['rev-parse', '--short', ref], {cwd: root, encoding: 'utf8'});
  if (rev.status !== 0) throw new Error(`--baseline: git cannot resolve '${ref}': ${rev.stderr}`);
  const commit = rev.stdout.trim();
  const dir = `${root}scratch/baseline/${commit}`;
  const r = spawnSync('sh', ['-c', `test -d "${dir}/src" || (mkdir -p "${dir}" && git archive ${commit} src | tar -x -C "${dir}")`], {cwd: root, encoding: 'utf8'});
  if (r.status !== 0) throw new Error(`--baseline: extracting ${commit}: ${r.stderr}`);
  return {dir, commit};
}

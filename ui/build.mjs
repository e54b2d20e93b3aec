// Bundles the web console: src/main.js (with @xterm/xterm, uplot, yaml) into app.js and the
// CSS (ours, xterm's, uPlot's) into app.css, next to index.html, in --outdir (default dist/).
// api/build.rs runs it; the corral binary embeds the three files.
import * as esbuild from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);
const i = process.argv.indexOf('--outdir');
const outdir = i > 0 ? path.resolve(process.argv[i + 1]) : path.join(here, 'dist');
fs.mkdirSync(outdir, { recursive: true });

await esbuild.build({
  entryPoints: [path.join(here, 'src/main.js')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  outfile: path.join(outdir, 'app.js'),
  legalComments: 'none',
  logLevel: 'warning',
});
await esbuild.build({
  entryPoints: [path.join(here, 'src/app.css')],
  bundle: true,
  minify: true,
  outfile: path.join(outdir, 'app.css'),
  logLevel: 'warning',
});
fs.copyFileSync(path.join(here, 'index.html'), path.join(outdir, 'index.html'));
// The page's CSP forbids eval: refuse a bundle that would need it.
const js = fs.readFileSync(path.join(outdir, 'app.js'), 'utf8');
if (/\beval\(|new Function\(/.test(js)) {
  console.error('build.mjs: app.js uses eval or new Function, which the CSP forbids');
  process.exit(1);
}

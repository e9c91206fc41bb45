/**
 * Kernel VM lab: runs a shell scenario as root inside a throwaway qemu VM that boots the distribution's own
 * kernel (which has nftables flowtable support even when the host kernel does not).
 *
 * The VM has no disk: it mounts the host root filesystem read-only over virtio-9p (so the checkout, node and
 * the host's nft/ip/iperf3 binaries are at their usual paths) plus one writable 9p share, `labDir`, which
 * the scenario sees as `$LAB` at the same path. Scenarios write evidence files there for the test to assert on.
 *
 * prepareLab() builds, once per kernel, an uncompressed ELF vmlinux (boots ~3 s faster under TCG than the
 * compressed bzImage) and a small busybox initramfs whose /init mounts the shares, runs the scenario, prints
 * `VMLAB: END rc=N` on the serial console and powers off.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  access,
  chmod,
  constants,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';

/** Root of the checkout; scenarios run with this as their working directory. */
export const REPO_ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** Bump when the initramfs layout or /init changes so cached artefacts are rebuilt. */
const LAB_FORMAT = 4;

/** Modules the initramfs must load (with their dependencies) to mount the 9p shares. */
const BOOT_MODULES = ['virtio_pci', '9pnet_virtio', '9p'];

/** Modules the guest kernel must provide (as modules or built in) for flowtable offload scenarios. */
const FEATURE_MODULES = [
  'nf_tables',
  'nf_conntrack',
  'nft_ct',
  'nft_nat',
  'nf_flow_table',
  'nf_flow_table_inet',
  'nft_flow_offload',
  'veth',
];

const SETUP_HINT = 'run scripts/vmlab-setup.sh as root';

export interface LabOptions {
  /** Kernel image (bzImage) to boot. Default: env SLIPSTREAM_VM_KERNEL, else the newest /boot/vmlinuz-* with modules. */
  kernel?: string;
  /** Kernel version (directory under /lib/modules). Default: taken from the image name `vmlinuz-<kver>`. */
  kver?: string;
  /** Cache directory root. Default: env SLIPSTREAM_VM_CACHE, else /var/tmp/slipstream-vmlab. */
  cacheRoot?: string;
  /** qemu binary. Default: qemu-system-x86_64 from PATH. */
  qemu?: string;
}

export interface Lab {
  kver: string;
  /** The image passed to qemu -kernel: the extracted ELF vmlinux, or the bzImage if extraction was impossible. */
  kernelImage: string;
  kernelKind: 'vmlinux' | 'bzImage';
  initramfs: string;
  cacheDir: string;
  qemu: string;
  /** True when this call (re)built the cached artefacts. */
  built: boolean;
  /** Time spent building (0 when the cache was valid). */
  buildMs: number;
}

export interface RunOptions extends LabOptions {
  /**
   * Shell commands run by /bin/sh as root in the VM, cwd = repo root, env LAB = labDir, stdin /dev/null,
   * stdout/stderr on the console. The guest sees the host root read-only, with fresh tmpfs on /tmp, /run,
   * /var/tmp and /root (host files there are not visible, except labDir and cwd). The VM powers off when the
   * command returns; background processes are killed then.
   */
  scenario: string;
  /** Kill the VM and reject after this long (boot included). */
  timeoutMs: number;
  /** Keep labDir (with console.log) after the run and print where. Also env SLIPSTREAM_VM_KEEP=1. */
  keepLogs?: boolean;
  /** vCPUs, default 2. */
  smp?: number;
  /** Guest memory, default 1024. */
  memMB?: number;
  /** Extra environment variables for the scenario. */
  env?: Record<string, string>;
  /** Working directory of the scenario (a host directory, read-only in the VM). Default: REPO_ROOT. */
  cwd?: string;
  /** Extra qemu arguments (diagnostics). */
  qemuArgs?: string[];
  /** Stream the console to stderr while the VM runs. Also env SLIPSTREAM_VM_ECHO=1. */
  echo?: boolean;
  /** Called with labDir before the VM boots, to put files there that the scenario reads. */
  prepare?: (labDir: string) => Promise<void>;
  /** Called with each console line as it arrives (without its newline). */
  onConsoleLine?: (line: string) => void;
  /** Aborting it kills the VM; runInVm then rejects (VmLabError) and keeps the lab directory. */
  signal?: AbortSignal;
}

export interface VmResult {
  /** Exit code of the scenario. */
  rc: number;
  /** Serial console: /init's `VMLAB:` marker lines plus everything the scenario printed. */
  console: string;
  /** Host directory the scenario saw as $LAB. */
  labDir: string;
  /** Whether labDir is kept (keepLogs / SLIPSTREAM_VM_KEEP=1); cleanup() is then a no-op. */
  kept: boolean;
  timings: {
    /** qemu start until the scenario started (kernel boot + /init). */
    bootMs: number;
    /** Scenario start until its END marker. */
    scenarioMs: number;
    /** qemu start until qemu exited. */
    totalMs: number;
  };
  /** Reads a file the scenario wrote into $LAB. */
  readText(name: string): Promise<string>;
  /** Reads and parses a JSON file the scenario wrote into $LAB. */
  readJson<T = unknown>(name: string): Promise<T>;
  /** Removes labDir unless it is kept. */
  cleanup(): Promise<void>;
}

/** The VM could not be prepared, could not start, failed in /init, or timed out. */
export class VmLabError extends Error {
  /** Console captured so far ('' if qemu never started). */
  console: string;
  /** The run's lab directory, kept for inspection (undefined if none was made). */
  labDir: string | undefined;

  constructor(message: string, consoleText = '', labDir?: string) {
    super(message);
    this.name = 'VmLabError';
    this.console = consoleText;
    this.labDir = labDir;
  }
}

// ---------------------------------------------------------------------------------------------------------
// small helpers

async function exists(p: string): Promise<boolean> {
  try {
    await access(p, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** Looks a program up in PATH (plus the sbin directories, which a non-root PATH may lack). */
async function which(cmd: string): Promise<string | undefined> {
  if (cmd.includes('/')) return (await exists(cmd)) ? cmd : undefined;
  const dirs = (process.env['PATH'] ?? '').split(':').concat(['/usr/local/sbin', '/usr/sbin', '/sbin']);
  for (const dir of dirs) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    try {
      await access(p, constants.X_OK);
      return p;
    } catch {}
  }
  return undefined;
}

interface ToolResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program to completion, optionally feeding stdin, collecting stdout. Rejects only if it cannot start. */
function runTool(cmd: string, args: string[], input?: Buffer): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => {
      err += b.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
    // Decompressors exit early on trailing garbage; ignore the resulting EPIPE.
    child.stdin.on('error', () => {});
    child.stdin.end(input ?? Buffer.alloc(0));
  });
}

function versionCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** Directories the guest covers with a fresh tmpfs (so the host's content there is not visible). */
const GUEST_TMPFS = ['/tmp', '/run', '/var/tmp', '/root'];

/** Path characters that survive the kernel command line and qemu's comma-separated options unquoted. */
const SAFE_PATH = /^\/[A-Za-z0-9_./-]+$/;

// ---------------------------------------------------------------------------------------------------------
// ELF inspection

function isElf(buf: Buffer): boolean {
  return buf.length >= 64 && buf.readUInt32BE(0) === 0x7f454c46;
}

/** True if a 64-bit little-endian ELF executable has no PT_INTERP header, i.e. is statically linked. */
function elfIsStatic(buf: Buffer): boolean {
  if (!isElf(buf) || buf[4] !== 2 || buf[5] !== 1) return false;
  const phoff = Number(buf.readBigUInt64LE(0x20));
  const phentsize = buf.readUInt16LE(0x36);
  const phnum = buf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > buf.length) return false;
    if (buf.readUInt32LE(off) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// kernel selection and vmlinux extraction

interface KernelChoice {
  kernel: string;
  kver: string;
}

async function chooseKernel(opts: LabOptions): Promise<KernelChoice> {
  const explicit = opts.kernel ?? process.env['SLIPSTREAM_VM_KERNEL'];
  if (explicit) {
    const kernel = path.resolve(explicit);
    if (!(await exists(kernel))) {
      throw new VmLabError(`kernel image ${kernel} does not exist or is not readable`);
    }
    const kver = opts.kver ?? /^vmlinuz-(.+)$/.exec(path.basename(kernel))?.[1];
    if (!kver) {
      throw new VmLabError(
        `cannot tell the kernel version of ${kernel}: name it vmlinuz-<kver> or pass kver`,
      );
    }
    return { kernel, kver };
  }
  if (opts.kver) return { kernel: `/boot/vmlinuz-${opts.kver}`, kver: opts.kver };
  let names: string[] = [];
  try {
    names = await readdir('/boot');
  } catch {}
  const kvers: string[] = [];
  for (const n of names) {
    const m = /^vmlinuz-(.+)$/.exec(n);
    if (m?.[1] && (await exists(`/lib/modules/${m[1]}/modules.dep`))) kvers.push(m[1]);
  }
  kvers.sort(versionCompare);
  const kver = kvers.at(-1);
  if (!kver) {
    throw new VmLabError(
      'no guest kernel: no /boot/vmlinuz-<kver> with matching /lib/modules/<kver> ' +
        `(install the Debian package linux-image-amd64; ${SETUP_HINT})`,
    );
  }
  return { kernel: `/boot/vmlinuz-${kver}`, kver };
}

const DECOMPRESSORS: { magic: Buffer; tool: string; args: string[] }[] = [
  { magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), tool: 'xz', args: ['-dc'] },
  { magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), tool: 'zstd', args: ['-dcq'] },
  { magic: Buffer.from([0x1f, 0x8b, 0x08]), tool: 'gzip', args: ['-dc'] },
];

/**
 * Finds the compressed payload inside a bzImage and decompresses it to an ELF vmlinux. Returns a reason
 * string instead when that is not possible (the caller then boots the bzImage, which is only slower).
 */
async function extractVmlinux(kernel: string, out: string): Promise<string | undefined> {
  const img = await readFile(kernel);
  const reasons: string[] = [];
  for (const d of DECOMPRESSORS) {
    let pos = img.indexOf(d.magic);
    if (pos < 0) continue;
    const tool = await which(d.tool);
    if (!tool) {
      reasons.push(`payload looks ${d.tool}-compressed but ${d.tool} is not installed`);
      continue;
    }
    for (let tries = 0; pos >= 0 && tries < 8; tries++) {
      // Decompressors complain about the data that follows the payload; the ELF header decides success.
      const r = await runTool(tool, d.args, img.subarray(pos));
      if (isElf(r.stdout) && r.stdout.length > 1_000_000) {
        await writeFile(out, r.stdout);
        return undefined;
      }
      pos = img.indexOf(d.magic, pos + 1);
    }
    reasons.push(`no ELF found in the ${d.tool} payload(s)`);
  }
  return reasons.length ? reasons.join('; ') : 'no known compressed payload found';
}

// ---------------------------------------------------------------------------------------------------------
// initramfs

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  rdev?: [number, number];
}

/** Serialises entries as a newc cpio archive (the format the kernel unpacks as initramfs). */
function cpioNewc(entries: CpioEntry[]): Buffer {
  const chunks: Buffer[] = [];
  const pad = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  const push = (e: CpioEntry, nlink: number, inode: number) => {
    const name = Buffer.from(`${e.name}\0`);
    const data = e.data ?? Buffer.alloc(0);
    const fields = [inode, e.mode, 0, 0, nlink, 0, data.length, 0, 0, e.rdev?.[0] ?? 0, e.rdev?.[1] ?? 0];
    const header = `070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}${name.length
      .toString(16)
      .padStart(8, '0')}00000000`;
    chunks.push(Buffer.from(header, 'ascii'), name, pad(110 + name.length), data, pad(data.length));
  };
  for (const e of entries) push(e, (e.mode & 0o170000) === 0o040000 ? 2 : 1, ino++);
  push({ name: 'TRAILER!!!', mode: 0 }, 1, 0);
  return Buffer.concat(chunks);
}

interface ModuleInfo {
  name: string;
  file: string;
}

async function modinfo(modinfoBin: string, kver: string, field: string, name: string): Promise<string> {
  const r = await runTool(modinfoBin, ['-k', kver, '-F', field, name]);
  if (r.code !== 0) throw new VmLabError(`kernel ${kver} has no module ${name}: ${r.stderr.trim()}`);
  return r.stdout.toString().trim();
}

/** Resolves modules and their dependencies with modinfo, dependencies first; built-in modules are omitted. */
async function resolveModules(modinfoBin: string, kver: string, roots: string[]): Promise<ModuleInfo[]> {
  const ordered: ModuleInfo[] = [];
  const seen = new Set<string>();
  const visit = async (name: string): Promise<void> => {
    const key = name.replaceAll('-', '_');
    if (seen.has(key)) return;
    seen.add(key);
    const file = await modinfo(modinfoBin, kver, 'filename', name);
    if (file === '(builtin)' || file === '') return;
    const deps = (await modinfo(modinfoBin, kver, 'depends', name)).split(',').filter(Boolean);
    for (const dep of deps) await visit(dep);
    ordered.push({ name: key, file });
  };
  for (const r of roots) await visit(r);
  return ordered;
}

async function readModule(file: string): Promise<Buffer> {
  const raw = await readFile(file);
  if (file.endsWith('.ko')) return raw;
  if (file.endsWith('.ko.gz')) return gunzipSync(raw);
  const tool = file.endsWith('.ko.xz') ? 'xz' : file.endsWith('.ko.zst') ? 'zstd' : undefined;
  if (!tool) throw new VmLabError(`unknown module format: ${file}`);
  const bin = await which(tool);
  if (!bin) throw new VmLabError(`module ${file} is ${tool}-compressed but ${tool} is not installed`);
  const r = await runTool(bin, ['-dc'], raw);
  if (r.code !== 0) throw new VmLabError(`cannot decompress ${file}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** The modprobe shim: request_module() runs /sbin/modprobe in the initramfs root, not in the host root. */
const MODPROBE_SHIM = `#!/bin/busybox sh
exec /bin/busybox chroot /newroot /sbin/modprobe "$@"
`;

function initScript(modules: string[]): string {
  return `#!/bin/busybox sh
# VM lab /init: mount the host root (read-only) and the lab share over 9p, run $LAB/.vmlab/run.sh, power off.
/bin/busybox --install -s /bin
export PATH=/bin
uptime() { cut -d' ' -f1 /proc/uptime; }
fail() {
  echo "VMLAB: FAIL $*"
  sync
  reboot -f
}
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev || fail "cannot mount proc/sys/dev"
for m in ${modules.join(' ')}; do
  insmod /mods/$m.ko || fail "insmod $m failed"
done
[ -n "$LAB" ] || fail "no LAB= on the kernel command line"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /newroot || fail "cannot mount the host root over 9p"
mount --bind /newroot /hostroot || fail "cannot bind the host root"
for d in tmp run var/tmp; do
  mount -t tmpfs -o mode=1777 tmpfs /newroot/$d || fail "cannot mount tmpfs on /$d"
done
mount -t tmpfs -o mode=0700 tmpfs /newroot/root || fail "cannot mount tmpfs on /root"
mount -t proc proc /newroot/proc && mount -t sysfs sysfs /newroot/sys && mount -t devtmpfs devtmpfs /newroot/dev || fail "cannot mount proc/sys/dev in the new root"
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts && mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm || fail "cannot mount devpts/shm"
ln -sf /proc/self/fd /newroot/dev/fd
ln -sf /proc/self/fd/0 /newroot/dev/stdin
ln -sf /proc/self/fd/1 /newroot/dev/stdout
ln -sf /proc/self/fd/2 /newroot/dev/stderr
mkdir -p "/newroot$LAB" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 lab "/newroot$LAB" || fail "cannot mount the lab share at $LAB"
[ -r "/newroot$LAB/.vmlab/run.sh" ] || fail "$LAB/.vmlab/run.sh is missing"
# A scenario cwd under one of the tmpfs mounts above is brought back from the host root (read-only).
if [ -n "$SHOW" ]; then
  mkdir -p "/newroot$SHOW" && mount --bind "/hostroot$SHOW" "/newroot$SHOW" || fail "cannot show $SHOW"
fi
# Guest-side deadline, in case the host side is gone (the host kills qemu on its own timeout first).
if [ -n "$DEADLINE" ]; then
  (sleep "$DEADLINE"; echo "VMLAB: FAIL guest deadline of $DEADLINE s reached"; sync; reboot -f) &
fi
hostname vmlab
ip link set lo up
echo "VMLAB: BEGIN uptime=$(uptime)"
chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb LAB="$LAB" /bin/sh "$LAB/.vmlab/run.sh" </dev/null
echo "VMLAB: END rc=$? uptime=$(uptime)"
sync
umount "/newroot$LAB" 2>/dev/null
reboot -f
`;
}

async function findStaticBusybox(): Promise<string> {
  const candidates = ['/bin/busybox', '/usr/bin/busybox', '/usr/local/bin/busybox'];
  let dynamic: string | undefined;
  for (const c of candidates) {
    if (!(await exists(c))) continue;
    const fh = await open(c, 'r');
    try {
      const { buffer } = await fh.read({ buffer: Buffer.alloc(8192), position: 0 });
      if (elfIsStatic(buffer)) return c;
      dynamic = c;
    } finally {
      await fh.close();
    }
  }
  throw new VmLabError(
    dynamic
      ? `${dynamic} is dynamically linked; the initramfs needs a static busybox (install busybox-static; ${SETUP_HINT})`
      : `busybox not found (install the Debian package busybox-static; ${SETUP_HINT})`,
  );
}

// ---------------------------------------------------------------------------------------------------------
// prepareLab

interface Stamp {
  key: string;
  kver: string;
  kernelKind: 'vmlinux' | 'bzImage';
  kernelImage: string;
  modules: string[];
  builtAt: string;
  buildMs: number;
  note?: string;
}

const prepared = new Map<string, Promise<Lab>>();

/**
 * Builds (or reuses from the cache) what the VM boots: the kernel image and the initramfs.
 * Rejects with a VmLabError naming the missing package or file.
 */
export function prepareLab(opts: LabOptions = {}): Promise<Lab> {
  const memoKey = JSON.stringify([opts.kernel, opts.kver, opts.cacheRoot, opts.qemu]);
  let p = prepared.get(memoKey);
  if (!p) {
    p = doPrepareLab(opts);
    prepared.set(memoKey, p);
    p.catch(() => prepared.delete(memoKey));
  }
  return p;
}

async function doPrepareLab(opts: LabOptions): Promise<Lab> {
  if (process.platform !== 'linux') throw new VmLabError('the VM lab needs a Linux host');
  const qemu = await which(opts.qemu ?? 'qemu-system-x86_64');
  if (!qemu) {
    throw new VmLabError(
      `${opts.qemu ?? 'qemu-system-x86_64'} not found (install the Debian package qemu-system-x86; ${SETUP_HINT})`,
    );
  }
  const { kernel, kver } = await chooseKernel(opts);
  if (!/^[A-Za-z0-9._+-]+$/.test(kver)) throw new VmLabError(`odd kernel version string: ${kver}`);
  if (!(await exists(kernel))) {
    throw new VmLabError(
      `kernel image ${kernel} does not exist (install linux-image-${kver}; ${SETUP_HINT})`,
    );
  }
  const modDep = `/lib/modules/${kver}/modules.dep`;
  if (!(await exists(modDep))) {
    throw new VmLabError(
      `modules for kernel ${kver} not found: ${modDep} is missing (install linux-image-${kver})`,
    );
  }
  const busybox = await findStaticBusybox();

  const cacheRoot = path.resolve(
    opts.cacheRoot ?? process.env['SLIPSTREAM_VM_CACHE'] ?? '/var/tmp/slipstream-vmlab',
  );
  const cacheDir = path.join(cacheRoot, kver);
  const [kst, mst, bst] = await Promise.all([stat(kernel), stat(modDep), stat(busybox)]);
  const key = createHash('sha256')
    .update(
      JSON.stringify({
        LAB_FORMAT,
        kernel,
        kver,
        k: [kst.size, kst.mtimeMs],
        m: [mst.size, mst.mtimeMs],
        b: [busybox, bst.size, bst.mtimeMs],
        init: initScript([]),
        shim: MODPROBE_SHIM,
      }),
    )
    .digest('hex');

  const fromStamp = async (dir: string): Promise<Lab | undefined> => {
    try {
      const s = JSON.parse(await readFile(path.join(dir, 'stamp.json'), 'utf8')) as Stamp;
      const initramfs = path.join(dir, 'initramfs.cpio.gz');
      if (s.key !== key || !(await exists(s.kernelImage)) || !(await exists(initramfs))) return undefined;
      return {
        kver,
        kernelImage: s.kernelImage,
        kernelKind: s.kernelKind,
        initramfs,
        cacheDir: dir,
        qemu,
        built: false,
        buildMs: 0,
      };
    } catch {
      return undefined;
    }
  };
  const cached = await fromStamp(cacheDir);
  if (cached) return cached;

  const t0 = performance.now();
  const modinfoBin = await which('modinfo');
  if (!modinfoBin) throw new VmLabError(`modinfo not found (install the Debian package kmod; ${SETUP_HINT})`);
  const missing: string[] = [];
  for (const m of FEATURE_MODULES) {
    const r = await runTool(modinfoBin, ['-k', kver, '-F', 'filename', m]);
    if (r.code !== 0) missing.push(m);
  }
  if (missing.length) {
    throw new VmLabError(
      `kernel ${kver} lacks ${missing.join(', ')}: it cannot run flowtable offload scenarios; pick another kernel`,
    );
  }
  const modules = await resolveModules(modinfoBin, kver, BOOT_MODULES);

  await mkdir(cacheRoot, { recursive: true });
  const tmp = await mkdtemp(path.join(cacheRoot, `${kver}.build-`));
  try {
    // Kernel image: the extracted ELF vmlinux when the kernel supports the PVH entry point, else the bzImage.
    let kernelKind: 'vmlinux' | 'bzImage' = 'bzImage';
    let kernelImage = kernel;
    let note: string | undefined;
    const config = await readFile(`/boot/config-${kver}`, 'utf8').catch(() => '');
    if (!/^CONFIG_PVH=y$/m.test(config)) {
      note = `/boot/config-${kver} does not show CONFIG_PVH=y`;
    } else {
      note = await extractVmlinux(kernel, path.join(tmp, 'vmlinux'));
      if (!note) {
        kernelKind = 'vmlinux';
        kernelImage = path.join(cacheDir, 'vmlinux');
      }
    }
    if (note) {
      process.stderr.write(`[vmlab] booting the compressed ${kernel} (~3 s slower per run): ${note}\n`);
    }

    const entries: CpioEntry[] = [];
    for (const d of ['bin', 'sbin', 'dev', 'proc', 'sys', 'newroot', 'hostroot', 'mods']) {
      entries.push({ name: d, mode: 0o040755 });
    }
    entries.push({ name: 'dev/console', mode: 0o020600, rdev: [5, 1] });
    entries.push({ name: 'bin/busybox', mode: 0o100755, data: await readFile(busybox) });
    entries.push({ name: 'bin/sh', mode: 0o120777, data: Buffer.from('busybox') });
    entries.push({ name: 'sbin/modprobe', mode: 0o100755, data: Buffer.from(MODPROBE_SHIM) });
    for (const m of modules) {
      entries.push({ name: `mods/${m.name}.ko`, mode: 0o100644, data: await readModule(m.file) });
    }
    entries.push({ name: 'init', mode: 0o100755, data: Buffer.from(initScript(modules.map((m) => m.name))) });
    await writeFile(path.join(tmp, 'initramfs.cpio.gz'), gzipSync(cpioNewc(entries), { level: 1 }));

    const buildMs = Math.round(performance.now() - t0);
    const stamp: Stamp = {
      key,
      kver,
      kernelKind,
      kernelImage,
      modules: modules.map((m) => m.file),
      builtAt: new Date().toISOString(),
      buildMs,
      ...(note ? { note } : {}),
    };
    await writeFile(path.join(tmp, 'stamp.json'), `${JSON.stringify(stamp, null, 2)}\n`);
    await chmod(tmp, 0o755);

    // Publish atomically; a concurrent builder may have won the race, then use its result.
    await rm(cacheDir, { recursive: true, force: true });
    try {
      await rename(tmp, cacheDir);
    } catch (e) {
      const winner = await fromStamp(cacheDir);
      if (winner) return winner;
      throw e;
    }
    return {
      kver,
      kernelImage,
      kernelKind,
      initramfs: path.join(cacheDir, 'initramfs.cpio.gz'),
      cacheDir,
      qemu,
      built: true,
      buildMs,
    };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------
// runInVm

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function track(child: ChildProcess): void {
  live.add(child);
  child.on('exit', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // Never leave a qemu behind when the test process goes away.
    process.on('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
}

function tail(text: string, lines = 30): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/**
 * Boots a fresh VM, runs `scenario` as root (cwd = repo root, $LAB = a fresh writable directory shared with the
 * host) and resolves with the scenario's exit code and the console once the VM has powered off.
 * Rejects with a VmLabError if the VM cannot be prepared or started, /init fails, or the timeout expires
 * (qemu is killed); the run's labDir is then kept and named in the message.
 */
export async function runInVm(opts: RunOptions): Promise<VmResult> {
  let lab: Lab;
  try {
    lab = await prepareLab(opts);
  } catch (e) {
    throw new VmLabError(`VM cannot start: ${e instanceof Error ? e.message : String(e)}`);
  }
  const keep = opts.keepLogs === true || process.env['SLIPSTREAM_VM_KEEP'] === '1';
  const echo = opts.echo === true || process.env['SLIPSTREAM_VM_ECHO'] === '1';
  const cwd = path.resolve(opts.cwd ?? REPO_ROOT);
  if (!(await stat(cwd).catch(() => undefined))?.isDirectory()) {
    throw new VmLabError(`scenario cwd ${cwd} is not a directory`);
  }
  // The guest mounts fresh tmpfs on these; a cwd below them is bind-mounted back from the host root.
  const hidden = GUEST_TMPFS.some((d) => cwd === d || cwd.startsWith(`${d}/`));
  if (hidden && !SAFE_PATH.test(cwd)) {
    throw new VmLabError(`scenario cwd ${cwd} has characters the kernel command line cannot carry`);
  }

  for (const k of Object.keys(opts.env ?? {})) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new VmLabError(`bad environment variable name: ${k}`);
  }

  const labDir = await mkdtemp(path.join(os.tmpdir(), 'slipstream-vmlab-'));
  if (!SAFE_PATH.test(labDir)) {
    await rm(labDir, { recursive: true, force: true });
    throw new VmLabError(
      `lab directory ${labDir} has characters the kernel command line cannot carry; set TMPDIR`,
    );
  }
  const lines = ['# generated by test/kernel/lab.ts', `cd ${shellQuote(cwd)} || exit 125`];
  for (const [k, v] of Object.entries(opts.env ?? {})) lines.push(`export ${k}=${shellQuote(v)}`);
  lines.push(opts.scenario, '');
  await mkdir(path.join(labDir, '.vmlab'));
  await writeFile(path.join(labDir, '.vmlab', 'run.sh'), lines.join('\n'));
  if (opts.prepare) {
    try {
      await opts.prepare(labDir);
    } catch (e) {
      await rm(labDir, { recursive: true, force: true });
      throw new VmLabError(
        `preparing the lab directory failed: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
  }

  const args = [
    '-accel',
    'tcg',
    '-cpu',
    'qemu64',
    '-smp',
    String(opts.smp ?? 2),
    '-m',
    String(opts.memMB ?? 1024),
    '-kernel',
    lab.kernelImage,
    '-initrd',
    lab.initramfs,
    '-append',
    [
      'console=ttyS0 quiet panic=-1',
      `LAB=${labDir}`,
      `DEADLINE=${Math.ceil(opts.timeoutMs / 1000) + 30}`,
      ...(hidden ? [`SHOW=${cwd}`] : []),
    ].join(' '),
    '-fsdev',
    'local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap',
    '-device',
    'virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot',
    '-fsdev',
    `local,id=lab,path=${labDir},security_model=none,multidevs=remap`,
    '-device',
    'virtio-9p-pci,fsdev=lab,mount_tag=lab',
    '-nic',
    'none',
    '-display',
    'none',
    '-serial',
    'stdio',
    '-no-reboot',
    ...(opts.qemuArgs ?? []),
  ];

  const t0 = performance.now();
  let consoleText = '';
  let stderrText = '';
  let beginAt: number | undefined;
  let endAt: number | undefined;

  const outcome = await new Promise<{
    code: number | null;
    signal: string | null;
    timedOut: boolean;
    spawnError?: Error;
  }>((resolve) => {
    const child = spawn(lab.qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    track(child);
    let timedOut = false;
    let settled = false;
    const stop = () => {
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 3000).unref();
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, opts.timeoutMs);
    if (opts.signal?.aborted) stop();
    opts.signal?.addEventListener('abort', stop, { once: true });
    let partial = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      const s = chunk.replaceAll('\r', '');
      consoleText += s;
      if (echo) process.stderr.write(s);
      if (opts.onConsoleLine) {
        const lines = (partial + s).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) opts.onConsoleLine(line);
      }
      if (beginAt === undefined && consoleText.includes('VMLAB: BEGIN')) beginAt = performance.now();
      if (endAt === undefined && /VMLAB: END rc=\d+/.test(consoleText)) endAt = performance.now();
    });
    child.stderr.on('data', (chunk: string) => {
      stderrText += chunk;
      if (echo) process.stderr.write(chunk);
    });
    child.on('error', (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ code: null, signal: null, timedOut: false, spawnError: err });
    });
    child.on('close', (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', stop);
      if (partial && opts.onConsoleLine) opts.onConsoleLine(partial);
      resolve({ code, signal, timedOut });
    });
  });
  const totalMs = Math.round(performance.now() - t0);
  await writeFile(
    path.join(labDir, 'console.log'),
    consoleText + (stderrText ? `\n--- qemu stderr ---\n${stderrText}` : ''),
  );

  const fail = (why: string): never => {
    const detail = [
      why,
      stderrText.trim() ? `qemu stderr:\n${stderrText.trim()}` : '',
      consoleText.trim() ? `console (last lines):\n${tail(consoleText)}` : '',
      `lab directory kept: ${labDir}`,
    ]
      .filter(Boolean)
      .join('\n');
    throw new VmLabError(detail, consoleText, labDir);
  };

  if (outcome.spawnError) fail(`VM cannot start: cannot run ${lab.qemu}: ${outcome.spawnError.message}`);
  const initFail = /^VMLAB: FAIL (.*)$/m.exec(consoleText);
  if (initFail) fail(`VM init failed: ${initFail[1]}`);
  const ends = [...consoleText.matchAll(/VMLAB: END rc=(\d+)/g)];
  const end = ends.at(-1);
  if (opts.signal?.aborted) fail('VM run aborted; qemu killed');
  if (outcome.timedOut) {
    fail(
      `VM timed out after ${opts.timeoutMs} ms (${beginAt ? 'scenario was running' : 'still booting'}); qemu killed`,
    );
  }
  if (!end) {
    const how = outcome.signal ? `signal ${outcome.signal}` : `code ${outcome.code}`;
    fail(
      beginAt
        ? `VM stopped (qemu ${how}) before the scenario finished (kernel panic or poweroff?)`
        : `VM cannot start: qemu exited (${how}) before the scenario started`,
    );
  }
  const rc = Number(end![1]);
  const bootMs = Math.round((beginAt ?? t0) - t0);
  const scenarioMs = Math.round((endAt ?? performance.now()) - (beginAt ?? t0));

  if (keep) {
    process.stderr.write(`[vmlab] kept ${labDir} (console: ${path.join(labDir, 'console.log')})\n`);
  }
  const resolveIn = (name: string) => {
    const p = path.resolve(labDir, name);
    if (!p.startsWith(`${labDir}/`)) throw new VmLabError(`${name} is outside the lab directory`);
    return p;
  };
  return {
    rc,
    console: consoleText,
    labDir,
    kept: keep,
    timings: { bootMs, scenarioMs, totalMs },
    readText: (name) => readFile(resolveIn(name), 'utf8'),
    readJson: async <T = unknown>(name: string) => JSON.parse(await readFile(resolveIn(name), 'utf8')) as T,
    cleanup: async () => {
      if (!keep) await rm(labDir, { recursive: true, force: true });
    },
  };
}

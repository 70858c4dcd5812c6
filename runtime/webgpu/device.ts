/**
 * WebGPU device acquisition for the browser (navigator.gpu) and Node (Dawn via
 * the `webgpu` npm package; on GPU-less Linux it runs on Mesa's lavapipe Vulkan
 * driver, which needs libvulkan1 and a recent mesa-vulkan-drivers — Debian
 * bookworm-backports' 25.0 works; bookworm's own 22.3 is rejected by Dawn).
 *
 * Failures surface as one {@link WebGPUUnavailableError} whose message is a
 * single line starting with "no WebGPU adapter: " and naming the cause.
 */

/**
 * A line Dawn logs from native code at warning severity ("Warning: ..."): on lavapipe the two
 * "maxDynamic{Uniform,Storage}BuffersPerPipelineLayout artificially reduced" lines at adapter
 * creation, and the Vulkan loader's messages about drivers it skips, which Dawn relays. None
 * is an error; the CLI holds them back from the user's terminal (runtime/cli/main.ts).
 * Lavapipe's own conformance notice counts too.
 */
export function isDawnWarning(line: string): boolean {
  return /^Warning: /.test(line) || /^WARNING: lavapipe is not a conformant vulkan implementation/.test(line);
}

/**
 * A line the Vulkan loader prints itself, which VK_LOADER_DEBUG asks for: "ERROR: [Loader
 * Message] Code 0 : ..." (loaders from 1.3.2xx) or "ERROR:            ..." (its level, a
 * colon and a column of spaces, as Debian bookworm's 1.3.239 writes it).
 */
export const isVulkanLoaderLine = (line: string): boolean =>
  /^(ERROR|WARNING|INFO|DEBUG|PERF|LAYER|DRIVER|IMPLEMENTATION|VALIDATION)(\s*\|\s*[A-Z]+)*:(\s+\[Loader Message\]|\s{4,}\S)/.test(line);

export class WebGPUUnavailableError extends Error {
  override readonly name = 'WebGPUUnavailableError';
  constructor(readonly reason: string) {
    super(`no WebGPU adapter: ${reason}`);
  }
}

export interface AcquireWebGPUOptions {
  powerPreference?: GPUPowerPreference;
  forceFallbackAdapter?: boolean;
  /**
   * Optional features to enable when the adapter has them.
   * Default: ['shader-f16', 'subgroups'].
   */
  optionalFeatures?: GPUFeatureName[];
  /** Features that must be present; a missing one is a WebGPUUnavailableError. */
  requiredFeatures?: GPUFeatureName[];
  /**
   * Node only: options for Dawn's `create()`, e.g. ['backend=null'] (validates
   * WGSL and pipelines but runs nothing: buffers read back garbage) or
   * ['enable-dawn-features=dump_shaders'].
   */
  dawnOptions?: string[];
  /** Device label (shows up in Dawn's error messages). */
  label?: string;
}

export interface WebGPUInfo {
  /** 'browser' when navigator.gpu was used, 'dawn-node' for the `webgpu` package. */
  backend: 'browser' | 'dawn-node';
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  /** From adapter.info when the subgroups feature is supported (lavapipe: 8/8). */
  subgroupMinSize: number | undefined;
  subgroupMaxSize: number | undefined;
  /** Features enabled on the device (sorted). */
  features: string[];
  /** Limits in force on the device (= the adapter's full limits). */
  limits: Record<string, number>;
  /** One-line human summary, e.g. "mesa software llvmpipe: Mesa 25.0.7 ... (fallback)". */
  summary: string;
}

export interface DeviceLoss {
  reason: GPUDeviceLostReason;
  message: string;
}

export interface AcquiredWebGPU {
  gpu: GPU;
  adapter: GPUAdapter;
  device: GPUDevice;
  info: WebGPUInfo;
  /** null until device.lost resolves; then why ('destroyed' after release()). */
  lost: DeviceLoss | null;
  /** Destroys the device (unmaps its buffers). Safe to call more than once. */
  release(): void;
}

export interface WGSLMessage {
  line: number;
  col: number;
  message: string;
  type: GPUCompilationMessageType;
}

export interface WGSLValidation {
  ok: boolean;
  messages: WGSLMessage[];
}

interface DawnModule {
  create(options: string[]): GPU;
  globals: Record<string, unknown>;
}

const DEFAULT_OPTIONAL_FEATURES: GPUFeatureName[] = ['shader-f16', 'subgroups'];

/** Dawn's GPU object, one per process per option set (creating one is costly). */
const dawnInstances = new Map<string, GPU>();
let lastAcquired: AcquiredWebGPU | null = null;
/** The most recent device loss seen by any device acquired here. */
export let lastDeviceLoss: DeviceLoss | null = null;

function browserGPU(): GPU | undefined {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  return nav?.gpu ?? undefined;
}

function isNode(): boolean {
  const p = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof p?.versions?.node === 'string';
}

function oneLine(s: unknown): string {
  const text = s instanceof Error ? s.message : String(s);
  return text.replace(/\s+/g, ' ').trim();
}

async function loadDawn(): Promise<DawnModule> {
  // Non-literal specifier so browser bundlers do not try to pull in dawn.node.
  const specifier = 'webgpu';
  try {
    return (await import(/* @vite-ignore */ /* webpackIgnore: true */ specifier)) as DawnModule;
  } catch (e) {
    throw new WebGPUUnavailableError(
      `cannot load the 'webgpu' package (Dawn for Node): ${oneLine(e)}`,
    );
  }
}

async function dawnGPU(options: string[]): Promise<GPU> {
  const key = options.join('\u0000');
  const cached = dawnInstances.get(key);
  if (cached) return cached;
  const dawn = await loadDawn();
  // Install GPUBufferUsage, GPUMapMode, GPUShaderStage, ... as globals (as a
  // browser has them); never overwrite what is already there.
  const g = globalThis as Record<string, unknown>;
  for (const [name, value] of Object.entries(dawn.globals)) {
    if (!(name in g)) g[name] = value;
  }
  let gpu: GPU;
  try {
    gpu = dawn.create(options);
  } catch (e) {
    throw new WebGPUUnavailableError(`Dawn create(${JSON.stringify(options)}) failed: ${oneLine(e)}`);
  }
  dawnInstances.set(key, gpu);
  return gpu;
}

/**
 * Why Dawn on Linux found no adapter: looks for the Vulkan loader and the
 * Vulkan ICD manifests the loader would read. Best effort, Node only.
 */
async function diagnoseNoAdapter(options: string[]): Promise<string> {
  const backendOpt = options.find((o) => o.startsWith('backend='));
  if (backendOpt && backendOpt !== 'backend=vulkan') {
    return `requestAdapter() returned null with Dawn option ${backendOpt}`;
  }
  if (process.platform !== 'linux') {
    return `requestAdapter() returned null (Dawn on ${process.platform}/${process.arch})`;
  }
  const fs = await import('node:fs');
  const path = await import('node:path');
  const os = await import('node:os');

  const triple =
    process.arch === 'x64' ? 'x86_64-linux-gnu' : process.arch === 'arm64' ? 'aarch64-linux-gnu' : '';
  const libDirs = [
    ...(process.env['LD_LIBRARY_PATH'] ?? '').split(':').filter(Boolean),
    ...(triple ? [`/lib/${triple}`, `/usr/lib/${triple}`, `/usr/local/lib/${triple}`] : []),
    '/lib64', '/usr/lib64', '/lib', '/usr/lib', '/usr/local/lib',
  ];
  const hasLoader = libDirs.some((d) => {
    try {
      return fs.statSync(path.join(d, 'libvulkan.so.1')).size > 0;
    } catch {
      return false;
    }
  });
  if (!hasLoader) {
    return 'libvulkan.so.1 (the Vulkan loader) not found; install Debian package libvulkan1';
  }

  // ICD manifests, in the places the Vulkan loader looks.
  const explicit = process.env['VK_DRIVER_FILES'] ?? process.env['VK_ICD_FILENAMES'];
  let candidates: string[];
  let where: string;
  if (explicit) {
    candidates = explicit.split(':').filter(Boolean);
    where = `VK_DRIVER_FILES/VK_ICD_FILENAMES=${explicit}`;
  } else {
    const home = os.homedir();
    const configDirs = [process.env['XDG_CONFIG_HOME'] ?? path.join(home, '.config'),
      ...(process.env['XDG_CONFIG_DIRS'] ?? '/etc/xdg').split(':'), '/etc'];
    const dataDirs = [process.env['XDG_DATA_HOME'] ?? path.join(home, '.local/share'),
      ...(process.env['XDG_DATA_DIRS'] ?? '/usr/local/share:/usr/share').split(':')];
    candidates = [...configDirs, ...dataDirs].filter(Boolean).map((d) => path.join(d, 'vulkan/icd.d'));
    where = '/usr/share/vulkan/icd.d and the other loader paths';
  }
  const manifests: string[] = [];
  for (const c of candidates) {
    try {
      const st = fs.statSync(c);
      if (st.isDirectory()) {
        for (const f of fs.readdirSync(c)) if (f.endsWith('.json')) manifests.push(path.join(c, f));
      } else if (st.isFile()) {
        manifests.push(c);
      }
    } catch {
      /* not there */
    }
  }
  if (manifests.length === 0) {
    return `no Vulkan ICD (driver manifest) found in ${where}; install mesa-vulkan-drivers from bookworm-backports for lavapipe`;
  }
  let lavapipe = false;
  const described = manifests.map((m) => {
    try {
      const j = JSON.parse(fs.readFileSync(m, 'utf8')) as {
        ICD?: { api_version?: string; library_path?: string };
      };
      if (/lvp/.test(j.ICD?.library_path ?? '') || path.basename(m).startsWith('lvp_')) lavapipe = true;
      return `${path.basename(m)} (api ${j.ICD?.api_version ?? '?'})`;
    } catch {
      return `${path.basename(m)} (unreadable)`;
    }
  });
  const hint = lavapipe
    ? 'lavapipe is present but probably too old (Dawn rejects bookworm\'s Mesa 22.3, api 1.1.x; Mesa 25.0 works); install mesa-vulkan-drivers from bookworm-backports'
    : 'no lavapipe ICD among them; install mesa-vulkan-drivers from bookworm-backports for a software adapter';
  return `Vulkan loader and ICDs found but Dawn accepted no adapter; ICDs: ${described.join(', ')}; ${hint}`;
}

function adapterLimits(adapter: GPUAdapter): Record<string, number> {
  const out: Record<string, number> = {};
  const limits = adapter.limits as unknown as Record<string, unknown>;
  // WebIDL attributes are enumerable accessors on the prototype, so for-in sees them.
  for (const key in limits) {
    const v = limits[key];
    if (typeof v === 'number') out[key] = v;
  }
  return out;
}

/**
 * Acquire a GPUDevice with the adapter's full limits and shader-f16 /
 * subgroups where the adapter has them.
 * Browser: navigator.gpu. Node: the `webgpu` package (Dawn), loaded lazily.
 * Throws WebGPUUnavailableError (one-line message) when no adapter/device.
 */
export async function acquireWebGPU(opts: AcquireWebGPUOptions = {}): Promise<AcquiredWebGPU> {
  let gpu: GPU;
  let backend: WebGPUInfo['backend'];
  const dawnOptions = opts.dawnOptions ?? [];
  const fromBrowser = browserGPU();
  if (fromBrowser) {
    gpu = fromBrowser;
    backend = 'browser';
  } else if (isNode()) {
    gpu = await dawnGPU(dawnOptions);
    backend = 'dawn-node';
  } else {
    throw new WebGPUUnavailableError(
      'navigator.gpu is undefined (browser without WebGPU, WebGPU disabled, or not a secure context)',
    );
  }

  const adapterOpts: GPURequestAdapterOptions = {};
  if (opts.powerPreference) adapterOpts.powerPreference = opts.powerPreference;
  if (opts.forceFallbackAdapter) adapterOpts.forceFallbackAdapter = true;
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter(adapterOpts);
  } catch (e) {
    throw new WebGPUUnavailableError(`requestAdapter() failed: ${oneLine(e)}`);
  }
  if (!adapter) {
    const reason =
      backend === 'dawn-node'
        ? await diagnoseNoAdapter(dawnOptions)
        : 'navigator.gpu.requestAdapter() returned null (GPU blocklisted or WebGPU disabled?)';
    throw new WebGPUUnavailableError(reason);
  }

  for (const f of opts.requiredFeatures ?? []) {
    if (!adapter.features.has(f)) {
      throw new WebGPUUnavailableError(
        `adapter ${adapter.info.description || adapter.info.device} lacks required feature ${f}`,
      );
    }
  }
  const features = [
    ...new Set([
      ...(opts.requiredFeatures ?? []),
      ...(opts.optionalFeatures ?? DEFAULT_OPTIONAL_FEATURES).filter((f) => adapter.features.has(f)),
    ]),
  ];
  const requiredLimits = adapterLimits(adapter);

  let device: GPUDevice;
  try {
    const desc: GPUDeviceDescriptor = { requiredFeatures: features, requiredLimits };
    if (opts.label) desc.label = opts.label;
    device = await adapter.requestDevice(desc);
  } catch (e) {
    throw new WebGPUUnavailableError(`requestDevice() failed: ${oneLine(e)}`);
  }

  const ai = adapter.info;
  const deviceLimits: Record<string, number> = {};
  const dl = device.limits as unknown as Record<string, unknown>;
  for (const key in dl) {
    const v = dl[key];
    if (typeof v === 'number') deviceLimits[key] = v;
  }
  const info: WebGPUInfo = {
    backend,
    vendor: ai.vendor,
    architecture: ai.architecture,
    device: ai.device,
    description: ai.description,
    isFallbackAdapter: Boolean((ai as { isFallbackAdapter?: boolean }).isFallbackAdapter),
    subgroupMinSize: ai.subgroupMinSize,
    subgroupMaxSize: ai.subgroupMaxSize,
    features: [...device.features].sort(),
    limits: deviceLimits,
    summary: '',
  };
  info.summary = [
    [ai.vendor, ai.architecture, ai.description || ai.device].filter(Boolean).join(' '),
    info.isFallbackAdapter ? '(fallback)' : '',
    `[${backend}]`,
  ]
    .filter(Boolean)
    .join(' ');

  const acquired: AcquiredWebGPU = {
    gpu,
    adapter,
    device,
    info,
    lost: null,
    release() {
      device.destroy();
      if (lastAcquired === acquired) lastAcquired = null;
    },
  };
  void device.lost.then((l) => {
    const loss: DeviceLoss = { reason: l.reason, message: oneLine(l.message) };
    acquired.lost = loss;
    lastDeviceLoss = loss;
    if (lastAcquired === acquired) lastAcquired = null;
  });
  lastAcquired = acquired;
  return acquired;
}

/**
 * Compile WGSL on a device and report diagnostics (lines/columns 1-based as
 * Dawn/Tint reports them; 0 when the error carries no position).
 * Uses `device` if given, else the last device acquired here (acquiring one
 * if none is live). Compilation errors are caught in an error scope, so no
 * uncapturederror event fires.
 */
export async function validateWGSL(code: string, device?: GPUDevice): Promise<WGSLValidation> {
  const dev = device ?? (lastAcquired ?? (await acquireWebGPU())).device;
  dev.pushErrorScope('validation');
  const module = dev.createShaderModule({ code });
  const [compilation, scopeError] = await Promise.all([
    module.getCompilationInfo(),
    dev.popErrorScope(),
  ]);
  const messages: WGSLMessage[] = compilation.messages.map((m) => ({
    line: m.lineNum,
    col: m.linePos,
    message: m.message,
    type: m.type,
  }));
  const hasError = messages.some((m) => m.type === 'error');
  if (scopeError && !hasError) {
    messages.push({ line: 0, col: 0, message: oneLine(scopeError.message), type: 'error' });
  }
  return { ok: !hasError && !scopeError, messages };
}

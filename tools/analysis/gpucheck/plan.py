"""The plan of one GPU check and the orchestrator that runs it within one command's time.

One command (``make gpu-check``) runs every stage below in order within ``--budget`` seconds (540 by
default: one 10-minute command of the borrowed machine, start-up and transfers left aside). The checks that
need no compiled mmcv op come first; mmcv's CUDA build runs in the background meanwhile (``build``), and
only RetinaNet waits for it. Each check's verdict goes into ``report.json``/``report.md`` in the results
folder as soon as it is known, with a tarball of the logs, so a command killed at its limit still returns
what it found. ``--only`` runs a subset (a second lease: ``--only build`` gives the build the whole budget).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bench, build, training, wheels
from .report import Check, Report, machine_info

REPO = Path(__file__).resolve().parents[3]
TOOLS = REPO / 'tools' / 'analysis'


@dataclass(frozen=True)
class Stage:
    name: str
    estimate_s: int  # on the H200; 0 for work that runs beside the others
    what: str
    needs: tuple[str, ...] = ()


#: Estimates: the H200 of 2026-12-04 (tools/analysis/gpu_check.py, mmcv building beside the checks), rounded up.
STAGES = (
    Stage('build', 0, "in the background from the start: compile a header probe and mmcv's nms_cuda.cu with the "
          "build's flags (fails in under a minute), then pip wheel of mmcv 2.1.0 with CUDA ops for this GPU only "
          '(MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=<capability>, one job per core at nice 19; about '
          '7 minutes on the H200\'s 16 cores beside the checks)'),
    Stage('setup', 25, 'install the carried wheels this machine lacks into WORK/site (pip --no-index --no-deps; '
          'its torch kept), scipy/pkg_resources stand-ins where missing, mmcv\'s Python package with an _ext '
          'stand-in (no compiled ops yet); import mmdet, mmseg, mmpvt'),
    Stage('parity-timm', 30, "torch and timm only: mmpvt PVTv2-b2 vs timm's pvt_v2_b2, same weights, fp32 TF32 off "
          'at 512×672 and 333×517 (≤ 1e-5 of scale); mmpvt fp16/bf16 autocast vs fp32 (≤ 1e-2 / 5e-2), SRA SDPA vs '
          'explicit (fp32 ≤ 1e-5, fp16 ≤ 5e-3), CUDA vs CPU forward (≤ 1e-5) and backward (≤ 1e-4), with_cp'),
    Stage('parity-mmdet', 25, "PVT-S and PVTv2-b2 vs mmdet's backbones, same weights, 512×672: fp32 TF32 off "
          '(≤ 1e-5), fp16 (≤ 1e-2) and bf16 (≤ 5e-2) autocast'),
    Stage('train-amp', 100, 'Semantic FPN-PVT-T on toy ADE through tools/train.py, 50 iterations --amp (fp16); '
          'skipped steps from the checkpoint\'s loss scaler; then tools/test.py mIoU'),
    Stage('train-dist', 90, 'tools/dist_train.sh CONFIG 1 (torchrun, NCCL, MMDistributedDataParallel, '
          'RankMeanLossHook), 50 iterations --amp-dtype bfloat16, then tools/dist_test.sh CONFIG CKPT 1'),
    Stage('bench', 130, 'tools/analysis/benchmark.py against mmdet: PVT-S fp32 (1×3×800×1333 inference, '
          '2×3×512×512 training step, peak memory of that step at 2×3×800×1333 with/without with_cp, GEMM rate), '
          'PVT-S fp16, PVTv2-b2 fp32 and bf16 (inference, training step)'),
    Stage('mmcv-ops', 25, 'wait for the build (until the time RetinaNet needs), install its wheel, check CUDA '
          'nms against torchvision and sigmoid_focal_loss against the formula', needs=('build',)),
    Stage('retinanet', 75, "RetinaNet-PVT-T on toy COCO through tools/train.py, the demo's 4 epochs "
          '(200 iterations), then tools/test.py bbox mAP, on CUDA ops', needs=('build', 'mmcv-ops')),
)  # fmt: skip
STAGE_NAMES = tuple(s.name for s in STAGES)
BY_NAME = {s.name: s for s in STAGES}


@dataclass(frozen=True)
class Settings:
    """Sizes of one plan: the GPU's, or the CPU rehearsal's (which proves the flow, not the figures)."""

    parity_size: tuple[int, int]
    odd_size: tuple[int, int]
    seg_iters: int
    dist_iters: int
    subset: int | None  # images per split (None: the whole toy set)
    det_epochs: int  # RetinaNet
    bench: dict[str, Any] = field(default_factory=dict)


SETTINGS = {
    'cuda': Settings(
        (512, 672),
        (333, 517),
        50,
        50,
        None,
        4,
        dict(infer=(800, 1333), train=(2, 512, 512), memory=(2, 800, 1333), warmup=2, repeats=5),
    ),
    'cpu': Settings(
        (128, 160),
        (97, 131),
        4,
        2,
        8,
        1,
        dict(infer=(224, 224), train=(1, 128, 128), memory=(1, 128, 128), warmup=1, repeats=1),
    ),
}


def select(only: list[str] | None) -> list[Stage]:
    """The stages to run: ``only`` (all by default) with what they need, always after ``setup``, in plan order."""
    if not only:
        return list(STAGES)
    unknown = [n for n in only if n not in BY_NAME]
    if unknown:
        raise ValueError(f'unknown stage(s) {", ".join(unknown)}; the stages are {", ".join(STAGE_NAMES)}')
    wanted = {'setup', *only}
    for name in only:
        wanted.update(BY_NAME[name].needs)
    return [s for s in STAGES if s.name in wanted]


def describe(stages: list[Stage], budget: float) -> str:
    """The dry run: one line per stage with its estimate, and whether the sum fits the budget."""
    lines, total = [], 0
    for i, stage in enumerate(stages, 1):
        total += stage.estimate_s
        when = 'beside the others' if not stage.estimate_s else f'~{stage.estimate_s} s'
        lines.append(f'{i}. {stage.name} ({when}): {stage.what}')
    fits = 'fits' if total <= budget else 'does NOT fit'
    lines.append(f'estimated {total} s of {budget:.0f} s ({fits}); the build gets the time until RetinaNet must start')
    return '\n'.join(lines)


class Context:
    """Folders, deadline, environment and report of one command."""

    def __init__(self, args: Any) -> None:
        self.args = args
        self.device: str = args.device
        self.settings = SETTINGS[self.device]
        self.out = Path(args.out)
        self.work = Path(args.work)
        self.wheels = Path(args.wheels)
        self.logs = self.work / 'logs'
        self.site = self.work / 'site'
        self.compat = self.work / 'compat'
        self.lite = self.work / 'mmcv-lite'
        self.deadline = time.monotonic() + args.budget
        self.mmcv = 'lite'  # 'lite' (stand-in ops), 'cuda' or 'cpu' (the installed build)
        self.build_job: build.BuildJob | None = None
        self.build_thread: threading.Thread | None = None
        self.build_outcome: build.Build | None = None
        self.lock = threading.Lock()
        self.report: Report | None = None

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sdist(self) -> Path | None:
        return next(self.wheels.glob(f'{wheels.MMCV[0]}-{wheels.MMCV[1]}.tar.gz'), None)

    def env(self) -> dict[str, str]:
        """Every check's subprocess: this checkout, the installed wheels, the stand-ins; few CPU threads."""
        dirs: list[Path] = [REPO, TOOLS]
        dirs += [d for d in (self.site, self.compat) if d.is_dir()]
        if self.mmcv == 'lite':
            dirs.append(self.lite)
        env = wheels.with_path(*dirs)
        env.update(OMP_NUM_THREADS='4', PYTHONUNBUFFERED='1', MPLBACKEND='Agg', PYTHONWARNINGS='ignore')
        env['PYTHON'] = sys.executable  # tools/dist_train.sh's interpreter
        return env

    def add(self, check: Check) -> Check:
        with self.lock:
            assert self.report is not None
            return self.report.add(check)

    def tool(self, kind: str, cmd: list[str], log: Path, cap: float) -> tuple[bool, str]:
        """Run a command within ``cap`` seconds and the time left; (succeeded, output). Output goes to ``log``."""
        timeout = min(cap, self.left() - 5)
        if timeout < 15:
            return False, f'not started: {self.left():.0f} s left'
        print('$ ' + ' '.join(map(str, cmd)), flush=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, 'w') as f:
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, env=self.env(), cwd=REPO, start_new_session=True
            )
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                build.kill_tree(proc.pid)
                proc.wait()
                code = None
        text = log.read_text(errors='replace')
        build.trim_log(log)
        if code is None:
            return False, f'{text}\ntimed out after {timeout:.0f} s'
        return code == 0, text

    def pack_logs(self) -> None:
        """The logs so far as one tarball in the results folder (few files come back from the machine)."""
        tmp = self.out / 'logs.tar.gz.tmp'
        with tarfile.open(tmp, 'w:gz') as tar:
            for pattern in ('logs/*', 'runs/*/*.log', 'runs/*/*/vis_data/scalars.json', 'bench/*'):
                for path in sorted(self.work.glob(pattern)):
                    if path.is_file() and path.stat().st_size < 8 * 2**20:
                        tar.add(path, arcname=str(path.relative_to(self.work)))
        os.replace(tmp, self.out / 'logs.tar.gz')


# ----------------------------------------------------------------------------- stages
def stage_setup(ctx: Context) -> list[Check]:
    start = time.monotonic()
    to_install, kept = wheels.plan_install(ctx.wheels.glob('*.whl'), wheels.installed_version)
    if to_install:
        wheels.pip_install(to_install, target=ctx.site, force=True)
    notes = []
    if not wheels.importable('scipy'):
        wheels.write_stand_ins(ctx.compat)
        notes.append('scipy: stand-in')
    if not wheels.importable('pkg_resources'):
        wheels.copy_pkg_resources(ctx.wheels, ctx.work, ctx.compat)
        notes.append('pkg_resources from setuptools 69')
    sdist = ctx.sdist()
    source = 'its sdist' if sdist else 'the installed mmcv'
    write_lite(ctx, sdist)
    checks = [
        Check(
            'setup',
            'offline install',
            'pass',
            f'{len(to_install)} wheels installed, {len(kept)} kept; mmcv from {source} without compiled ops'
            + ''.join(f'; {n}' for n in notes),
            round(time.monotonic() - start, 1),
            dict(installed=[p.name for p in to_install], kept=kept),
        )
    ]
    code = (
        'import mmcv, mmcv.ops, mmdet.models, mmdet.datasets, mmdet.evaluation, mmseg.models, mmseg.datasets, '
        'mmseg.evaluation, mmengine, mmdet, mmseg, mmpvt; '
        'print(mmengine.__version__, mmcv.__version__, mmdet.__version__, mmseg.__version__)'
    )
    begin = time.monotonic()
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ctx.env(), cwd=REPO)
    ok = out.returncode == 0
    figure = 'mmengine {} mmcv {} mmdet {} mmseg {}, mmcv ops: stand-in'.format(*out.stdout.split()) if ok else ''
    checks.append(
        Check(
            'setup',
            'imports',
            'pass' if ok else 'fail',
            figure or build.tail(out.stderr),
            round(time.monotonic() - begin, 1),
        )
    )
    return checks


def write_lite(ctx: Context, sdist: Path | None) -> None:
    """mmcv's Python package with the ``_ext`` stand-in: from the sdist, else copied from the installed mmcv."""
    if sdist is not None:
        wheels.write_mmcv_lite(sdist, ctx.lite)
        return
    import importlib.util

    spec = importlib.util.find_spec('mmcv')
    if spec is None or spec.origin is None:
        raise RuntimeError(f'no {wheels.MMCV[0]}-{wheels.MMCV[1]}.tar.gz in {ctx.wheels} and no installed mmcv')
    shutil.rmtree(ctx.lite, ignore_errors=True)
    shutil.copytree(Path(spec.origin).parent, ctx.lite / 'mmcv', ignore=shutil.ignore_patterns('_ext*', '__pycache__'))
    wheels.write_ext_stand_in(ctx.lite / 'mmcv')


def cuda_arch() -> str:
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return f'{major}{minor}'


def start_build(ctx: Context) -> list[Check]:
    """Probe, then start the CUDA build in the background; the probe's verdict is reported by the thread."""
    if ctx.device != 'cuda' and not ctx.args.build_cuda:
        ctx.build_outcome = build.Build(False, 0.0, 'no CUDA device (a rehearsal builds nothing)')
        return []

    def run() -> None:
        try:
            ctx.build_outcome = probe_and_start(ctx)
        except Exception as err:  # the stage that waits reports it
            ctx.build_outcome = build.Build(False, 0.0, f'{type(err).__name__}: {err}')

    ctx.build_thread = threading.Thread(target=run, name='mmcv-build', daemon=True)
    ctx.build_thread.start()
    return []


def probe_and_start(ctx: Context) -> build.Build | None:
    """None when the build started (the outcome comes from the job), else why it did not."""
    import torch

    sdist = ctx.sdist()
    src = build.unpack_sdist(sdist, ctx.work / 'mmcv-src') if sdist else None
    arch = cuda_arch() if torch.cuda.is_available() else '90'
    env = dict(os.environ)
    env['PATH'] = os.pathsep.join([str(Path(sys.executable).parent), env.get('PATH', '')])
    ok, detail = build.probe_nvcc(env, torch.version.cuda, arch, ctx.work / 'probe', src)
    with ctx.lock:
        if ctx.report is not None:
            ctx.report.machine['nvcc'] = detail.split(' (')[0] if ok else 'probe failed'
    if not ok:
        return build.Build(False, 0.0, f'probe failed: {detail}')
    if src is None:
        return build.Build(False, 0.0, f'no {wheels.MMCV[0]}-{wheels.MMCV[1]}.tar.gz in {ctx.wheels}')
    tools = wheels.install_buildtools(ctx.wheels, ctx.work / 'buildtools')
    jobs = os.cpu_count() or 2  # at nice 19 they take what the checks leave
    env.update(MMCV_WITH_OPS='1', FORCE_CUDA='1', MAX_JOBS=str(jobs), TORCH_CUDA_ARCH_LIST=f'{arch[:-1]}.{arch[-1]}')
    print(f'[gpu-check] {detail}; building mmcv CUDA ops with {jobs} jobs in the background', flush=True)
    ctx.build_job = build.BuildJob(
        src, ctx.work / 'mmcv-dist', wheels.with_path(tools, env=env), ctx.logs / 'mmcv_build.log'
    )
    ctx.build_job.start()
    return None


def run_worker(ctx: Context, module: str, args: list[str], log: str, cap: float) -> tuple[list[Check], str]:
    """Run ``python -m gpucheck.<module> ARGS --json F`` within ``cap`` seconds; (its checks, its output).

    The result file is removed first, so a worker that dies is never read as an earlier command's checks.
    """
    import json

    result = ctx.work / f'{log}.json'
    result.unlink(missing_ok=True)
    cmd = [sys.executable, '-m', f'gpucheck.{module}', *args, '--device', ctx.device, '--json', str(result)]
    _ok, out = ctx.tool(module, cmd, ctx.logs / f'{log}.log', cap)
    return ([Check(**c) for c in json.loads(result.read_text())] if result.exists() else []), out


def stage_parity(group: str) -> Callable[[Context], list[Check]]:
    def run(ctx: Context) -> list[Check]:
        s = ctx.settings
        sizes = ['--size', *map(str, s.parity_size), '--odd-size', *map(str, s.odd_size)]
        checks, out = run_worker(ctx, 'parity', [group, *sizes], f'parity_{group}', 240)
        if not checks:
            verdict = 'not run' if 'No module named' in out and "'timm'" in out else 'fail'
            return [Check(f'parity {group}', 'worker', verdict, build.tail(out))]
        return checks

    return run


SEG_CONFIG = 'configs/toy/fpn_pvt_t_toy_ade.py'
DET_CONFIG = 'configs/toy/retinanet_pvt_t_fpn_toy_coco.py'


def seg_run(ctx: Context, name: str, iters: int, **kwargs: Any) -> training.Run:
    """A Semantic FPN-PVT-T run on the toy ADE of ``iters`` iterations, tested on its last checkpoint."""
    s = ctx.settings
    subset = training.subset_options(s.subset, cfg_options=True)
    options = training.seg_options(iters, s.subset)
    data = ('ade', 'data/toy_ade')
    return training.Run(name, SEG_CONFIG, data, options, f'iter_{iters}.pth', 'mIoU', test_options=subset, **kwargs)


def stage_train_amp(ctx: Context) -> Iterator[Check]:
    """fp16 on a GPU (bf16 runs in train-dist), bf16 on the CPU (its only AMP dtype)."""
    name, dtype = ('fp16', 'float16') if ctx.device == 'cuda' else ('bf16', 'bfloat16')
    run = seg_run(ctx, f'Semantic FPN-PVT-T --amp {name}', ctx.settings.seg_iters, amp=dtype)
    yield training.run_training(run, ctx.work / 'runs', ctx.tool, ctx.env(), REPO, 'train-amp')


def stage_train_dist(ctx: Context) -> Iterator[Check]:
    """One process under torchrun: NCCL and bf16 on a GPU, gloo and fp32 on the CPU."""
    backend, amp = ('nccl', 'bfloat16') if ctx.device == 'cuda' else ('gloo', None)
    name = f'Semantic FPN-PVT-T dist_train.sh 1 process ({backend}{", --amp bf16" if amp else ""})'
    pattern = rf'distributed run: backend {backend}'
    run = seg_run(ctx, name, ctx.settings.dist_iters, amp=amp, gpus=1, extra_log_pattern=pattern)
    yield training.run_training(run, ctx.work / 'runs', ctx.tool, ctx.env(), REPO, 'train-dist')


def stage_bench(ctx: Context) -> Iterator[Check]:
    for run in bench.BENCH_RUNS:
        folder = ctx.work / 'bench'
        yield bench.run_bench(run, ctx.device, ctx.settings.bench, folder, ctx.tool, sys.executable, 'bench')


def stage_mmcv_ops(ctx: Context, reserve: float) -> list[Check]:
    """Wait for the build until ``reserve`` seconds are left, install it, check two ops on the GPU."""
    if ctx.build_thread is not None:
        ctx.build_thread.join(timeout=max(1.0, ctx.left() - reserve))
    outcome = ctx.build_outcome
    if ctx.build_job is not None:
        outcome = ctx.build_job.wait(ctx.left() - reserve) or ctx.build_job.stop('not finished in the time left')
        build.trim_log(ctx.build_job.log)
    if outcome is None:
        outcome = build.Build(False, 0.0, 'the probe was still running')
    if ctx.device != 'cuda' and not ctx.args.build_cuda:
        return cpu_ops_rehearsal(ctx)
    if not outcome.ok:
        figure = f"no CUDA ops: {outcome.reason}; the checks above ran with mmcv's Python package and no compiled ops"
        return [Check('mmcv-ops', 'mmcv CUDA ops', 'degraded', figure, round(outcome.seconds, 1), dict(vars(outcome)))]
    wheels.pip_install([Path(outcome.wheel)], target=ctx.site, force=True)
    ctx.mmcv = 'cuda'
    flavour, why = build.mmcv_ops_flavour(ctx.env())
    objects = f'{outcome.total} objects, ' if outcome.total else ''
    figure = f'built in {outcome.seconds:.0f} s ({objects}{Path(outcome.wheel).name}), installed: '
    figure += f'{flavour} ops' if flavour else f'its ops do not import: {why}'
    verdict = 'pass' if flavour == 'cuda' else 'fail' if flavour is None else 'degraded'
    built = Check('mmcv-ops', 'mmcv CUDA ops', verdict, figure, round(outcome.seconds, 1))
    ops, out = run_worker(ctx, 'ops', [], 'ops', 120)
    return [built, *(ops or [Check('mmcv-ops', 'op checks', 'fail', build.tail(out))])]


def cpu_ops_rehearsal(ctx: Context) -> list[Check]:
    """On the CPU: the installed mmcv's CPU ops, if any, stand in for the CUDA build (never a pass)."""
    ctx.mmcv = 'cpu'
    flavour, why = build.mmcv_ops_flavour(ctx.env())
    if flavour != 'cpu':
        ctx.mmcv = 'lite'
        has = f'{flavour} ops' if flavour else f'no ops ({why})'
        return [Check('mmcv-ops', 'mmcv CUDA ops', 'not run', f'no CUDA device, and the installed mmcv has {has}')]
    ops, out = run_worker(ctx, 'ops', [], 'ops', 120)
    rehearsal = Check(
        'mmcv-ops', 'mmcv CUDA ops', 'degraded', "rehearsal: no CUDA device, the installed mmcv's CPU ops"
    )
    return [rehearsal, *(ops or [Check('mmcv-ops', 'op checks', 'fail', build.tail(out))])]


def stage_retinanet(ctx: Context) -> list[Check]:
    if ctx.mmcv == 'lite':
        return [Check('retinanet', 'RetinaNet-PVT-T', 'not run', 'no compiled mmcv ops (see mmcv-ops)')]
    s = ctx.settings
    run = training.Run(
        f'RetinaNet-PVT-T, {s.det_epochs} epochs',
        DET_CONFIG,
        ('coco', 'data/toy_coco'),
        training.det_options(s.det_epochs, s.subset),
        f'epoch_{s.det_epochs}.pth',
        'coco/bbox_mAP',
        test_options=training.subset_options(s.subset, cfg_options=True),
    )
    return [training.run_training(run, ctx.work / 'runs', ctx.tool, ctx.env(), REPO, 'retinanet')]


StageRunner = Callable[[Context], Iterable[Check]]
RUNNERS: dict[str, StageRunner] = {
    'setup': stage_setup,
    'build': start_build,
    'parity-timm': stage_parity('timm'),
    'parity-mmdet': stage_parity('mmdet'),
    'train-amp': stage_train_amp,
    'train-dist': stage_train_dist,
    'bench': stage_bench,
    'retinanet': stage_retinanet,
}


def run_plan(ctx: Context, stages: list[Stage]) -> int:
    """Run the stages in order; every check goes into the report at once. Returns the exit status."""
    ctx.report = Report(ctx.out, machine_info(ctx.device), planned=[s.name for s in stages if s.name != 'build'])
    names = [s.name for s in stages]
    try:
        for i, stage in enumerate(stages):
            later = sum(s.estimate_s for s in stages[i + 1 :])
            start = time.monotonic()
            if stage.name != 'build' and ctx.left() < 10:
                ctx.add(Check(stage.name, stage.name, 'not run', f'no time left ({ctx.left():.0f} s)'))
                continue
            if stage.name == 'mmcv-ops':
                reserve = sum(BY_NAME[n].estimate_s for n in names[i + 1 :]) + 10
                run: StageRunner = lambda c, r=reserve: stage_mmcv_ops(c, r)  # noqa: E731
            else:
                run = RUNNERS[stage.name]
            checks = []
            try:
                for check in run(ctx):  # each check goes into the report as soon as it is known
                    check.stage = stage.name
                    checks.append(ctx.add(check))
            except Exception as err:  # one stage's crash fails that stage; the plan goes on
                checks.append(ctx.add(Check(stage.name, stage.name, 'fail', f'{type(err).__name__}: {err}'[:500])))
            print(f'[gpu-check] stage {stage.name}: {time.monotonic() - start:.0f} s, {ctx.left():.0f} s left '
                  f'(~{later} s planned after it)', flush=True)  # fmt: skip
            ctx.pack_logs()
            if stage.name == 'setup' and any(c.verdict != 'pass' for c in checks):
                for rest in stages[i + 1 :]:
                    if rest.name != 'build':
                        ctx.add(Check(rest.name, rest.name, 'not run', 'the setup failed'))
                break
    finally:
        if ctx.build_job is not None and ctx.build_job.running():
            ctx.build_job.stop('stopped at the end of the command')
        ctx.pack_logs()
    return ctx.report.exit_status()

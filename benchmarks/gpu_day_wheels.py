"""The wheels a GPU day carries: fetched here, checked on the GPU machine.

The GPU machine's `python3` holds torch, torchvision, lightning, torchmetrics,
timm, scipy, scikit-learn, matplotlib and the rest of IMAGE_PACKAGES below;
iwu's other runtime dependencies travel as wheels.

    python benchmarks/gpu_day.py fetch [--dest gpu_wheels] [--python-version 3.12]

here, where the registry is reachable: `pip download` of the wheels of every
dependency in pyproject.toml that the image lacks, and of their own needs the
image lacks (read from each wheel's METADATA), for CPython on manylinux
x86-64, into `gpu_wheels/` (ignored by git). connected-components-3d is the one
compiled wheel: its 4.x releases publish manylinux_2_24 / manylinux_2_28 tags
only, its 3.x releases manylinux2014, so PLATFORMS names both (without the
2_28 tag pip falls back to cc3d 3.24). The image's Python 3.12.3 is, by its
version, Ubuntu 24.04's (glibc 2.39): both run there; and pip refuses a wheel
that does not in the install stage, within seconds. About 5 MiB in all (the carried
folders may hold 64). One line per wheel, and the total.

There, the import stage (import_check) imports each of pyproject.toml's
dependencies and every module of iwu: iwu must come from this checkout, and
each dependency the image lacks from the folder the wheels went into, so a
missing wheel cannot hide behind a copy installed elsewhere (as on a machine
with a venv, where the rehearsal runs).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from iwu.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# The GPU machine's image, 'cuda', as its documentation listed its Python packages on 2026-11-17
# (names as pip spells them). A dependency of iwu not named here travels as a wheel.
IMAGE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp
""".split())
# the manylinux tags pip may match for the GPU machine (pip takes each as given, and the older glibc tags below it)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_24_x86_64", "manylinux_2_28_x86_64")
MAX_WHEELS_MIB = 48  # the carried folders may hold 64 MiB, the working tree included


def normalize(name: str) -> str:
    """A distribution's name as the package index compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(text: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text)
    if not match:
        raise UserError(f"cannot read the requirement {text!r}")
    return normalize(match.group(1))


def runtime_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """pyproject.toml's [project] dependencies, as written there."""
    return list(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"])


def wheel_requirements(wheel: Path) -> list[str]:
    """A wheel's Requires-Dist lines, without those of its extras."""
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        text = z.read(meta).decode("utf-8", "replace")
    lines = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]
    return [r for r in lines if not re.search(r"\bextra\s*==", r)]


def wheel_name(wheel: Path) -> str:
    return normalize(wheel.name.split("-")[0])


def pip_download(requirements: list[str], dest: Path, python_version: str) -> None:
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
               "--only-binary=:all:", "--no-deps", "--implementation", "cp", "--python-version", python_version,
               *(f"--platform={p}" for p in PLATFORMS), "--dest", str(dest), *requirements]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"pip download {' '.join(requirements)}: {last} (is the package index reachable?)")


def fetch(dest: Path, python_version: str) -> list[Path]:
    """The wheels of iwu's runtime dependencies the GPU image lacks, and of their needs it lacks, into `dest`
    (its earlier wheels removed: two versions of one package stop an install)."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    fetched: dict[str, Path] = {}
    wanted = [r for r in runtime_requirements() if requirement_name(r) not in IMAGE_PACKAGES]
    while wanted:
        before = set(dest.glob("*.whl"))
        pip_download(wanted, dest, python_version)
        new = sorted(set(dest.glob("*.whl")) - before)
        fetched.update({wheel_name(w): w for w in new})
        needs = [r for w in new for r in wheel_requirements(w)]
        wanted = list(dict.fromkeys(r for r in needs
                                    if requirement_name(r) not in IMAGE_PACKAGES | fetched.keys()))
    return sorted(fetched.values())


def fetch_command(args) -> int:
    wheels = fetch(args.dest.resolve(), args.python_version)
    total = 0
    for wheel in wheels:
        size = wheel.stat().st_size
        total += size
        print(f"{wheel.name}  {size / 2**20:.2f} MiB")
    print(f"{len(wheels)} wheels for Python {args.python_version}, {total / 2**20:.2f} MiB in {args.dest}")
    if total > MAX_WHEELS_MIB * 2**20:
        raise UserError(f"{args.dest}: {total / 2**20:.1f} MiB of wheels, more than the {MAX_WHEELS_MIB} MiB "
                        "a GPU day can carry beside the working tree")
    return 0



# --------------------------------------------------------------------------- the import check (there)


def import_check(site: Path, wheels: list[Path], cuda: bool) -> dict:
    """Every import iwu needs, where each comes from, and the device; `problems` empty when all is well."""
    import importlib
    import importlib.metadata as metadata
    import pkgutil

    site = site.resolve()
    problems, warnings_, deps = [], [], {}
    import iwu

    if not inside(iwu.__file__, SRC):
        problems.append(f"iwu: imported from {iwu.__file__}, not from this checkout's {SRC}")
    carried = {wheel_name(w) for w in wheels}
    names = {requirement_name(r): r for r in runtime_requirements()}
    for name in [*names, *sorted(carried - names.keys())]:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: not installed, and no wheel of it was carried")
            continue
        where = []
        for module in top_modules(dist):
            try:
                where.append(module_file(importlib.import_module(module)))
            except Exception as err:  # any import error is the finding
                problems.append(f"{name}: import {module}: {one_line(err)}")
        from_site = bool(where) and all(inside(w, site) for w in where)
        if (name in carried or name not in IMAGE_PACKAGES) and not from_site:
            problems.append(f"{name}: imported from {where[0] if where else 'nowhere'}, not from the carried "
                            f"wheels ({site}): {'its wheel is missing' if name not in carried else 'shadowed'}")
        satisfied = satisfies(names.get(name), dist.version)
        if satisfied is False:
            warnings_.append(f"{name} {dist.version} does not satisfy {names[name]}")
        deps[name] = {"version": dist.version, "from": "carried" if from_site else "installed",
                      "satisfies": satisfied}
    walked = pkgutil.walk_packages(iwu.__path__, "iwu.", onerror=lambda name: problems.append(f"{name}: no import"))
    modules = [m.name for m in walked if m.name != "iwu.__main__"]  # importing __main__ runs the command line
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as err:
            problems.append(f"{module}: {one_line(err)}")
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if cuda and device is None:
        problems.append("torch sees no CUDA device (on a CPU, run with --rehearse)")
    return {"python": sys.version.split()[0], "executable": sys.executable, "dependencies": deps,
            "iwu_modules": len(modules), "torch": {"version": torch.__version__, "cuda": torch.version.cuda,
                                                   "device": device},
            "problems": problems, "warnings": warnings_}


def inside(path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def module_file(module) -> str:
    return getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "?")


def top_modules(dist) -> list[str]:
    """The importable top-level names a distribution installs (its top_level.txt, else its files)."""
    text = dist.read_text("top_level.txt")
    if text:
        names = text.split()
    else:  # a folder (not foo.libs, foo.dist-info) or a module file at the top
        names = [f.parts[0] if len(f.parts) > 1 else f.parts[0].split(".")[0]
                 for f in dist.files or [] if len(f.parts) > 1 or f.suffix in (".py", ".so")]
    return sorted(n for n in set(names) if n.isidentifier() and not n.startswith("_") and n not in ("test", "tests"))


def satisfies(requirement: str | None, version: str) -> bool | None:
    """Whether `version` meets the requirement's specifiers (None: nothing to check, or no `packaging`)."""
    if requirement is None:
        return None
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return None
    return Requirement(requirement).specifier.contains(version, prereleases=True)


def one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]


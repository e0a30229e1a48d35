"""The wheel folder the GPU check carries to a machine with no network, and the venv it installs into.

`prepare` (here, with PyPI): download, pinned to the project venv's versions, the wheels that the device
image lacks (scripts/gpu_check/wheels.txt) for CPython 3.12 on manylinux x86-64, plus the local
interpreter's own builds of the compiled ones when it is another Python (the dry mode installs those);
sdist-only packages are built into wheels here. With `--demo DIR` it also copies the demo dataset's
shards and tokenizer (`make data`) into `demo/`, so the GPU machine needs no espeak-ng or codec encoding.
It checks that every dependency of a carried wheel is carried or in the image (image_packages.txt) and
that the folder plus the tracked working tree fit the 64 MiB a device machine is handed.

`install` (on the device, or in the dry mode): a fresh venv on top of the running interpreter's packages
(so it uses the machine's torch and triton), then only the missing wheels, offline, then the project
itself (editable: `higgs_ds.kernels` is mapped from kernels/ by setup.py).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import re
import shutil
import site
import subprocess
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TARGET_PYTHON = "3.12"
TARGET_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                    "manylinux2014_x86_64", "manylinux1_x86_64")
TARGET_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                  "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                  "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
BUILD_FROM_SDIST = {"deepspeed"}  # PyPI has no wheel; with DS_BUILD_OPS unset its ops are JIT-built
CARRY_LIMIT_BYTES = 64 * 2**20  # the tracked tree + this folder, as a device machine receives them
MANIFEST = "manifest.json"
DEMO_PARTS = ("train", "eval", "tokenizer")  # what the end-to-end stage reads (no wavs: the shards hold codes)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(path: Path = HERE / "wheels.txt") -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [canonical(line) for line in lines if line]


def read_image_packages(path: Path = HERE / "image_packages.txt") -> set[str]:
    lines = (line.split("#", 1)[0] for line in path.read_text().splitlines())
    return {canonical(name) for line in lines for name in line.split()}


def local_pins(names: list[str]) -> dict[str, str]:
    """name -> the version installed in the running interpreter (the project venv)."""
    pins, missing = {}, []
    for name in names:
        try:
            pins[name] = md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise SystemExit(f"wheels.py prepare: {missing} not installed in {sys.executable}; "
                         "run it with the project venv (make gpu-wheels)")
    return pins


def _pip(*args: str, quiet: bool = True) -> None:
    cmd = [sys.executable, "-m", "pip", *args, *(["-q"] if quiet else [])]
    subprocess.run(cmd, check=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})


def wheel_dist(path: Path) -> tuple[str, str]:
    """(canonical name, version) from a wheel file name."""
    name, version = path.name.split("-")[:2]
    return canonical(name), version


def targets_device(path: Path) -> bool:
    """Whether a wheel installs on the device's CPython 3.12: pure, built for cp312, or stable-ABI (abi3)
    from an older CPython 3."""
    python, abi, _ = path.stem.split("-")[-3:]
    tags = python.split(".")
    if any(t.startswith("py3") or t == "py2" for t in tags):
        return True
    if abi == "abi3":
        return any(t.startswith("cp3") and int(t[3:]) <= 12 for t in tags)
    return "cp312" in tags


def _requirements(path: Path) -> list[str]:
    from packaging.requirements import Requirement

    with zipfile.ZipFile(path) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [canonical(r.name) for r in reqs if r.marker is None or r.marker.evaluate(TARGET_MARKERS)]


def check_closure(files: list[Path], image: set[str]) -> list[str]:
    """'wheel needs X' for every dependency of a device wheel that is neither carried nor in the image."""
    carried = {wheel_dist(f)[0] for f in files}
    return [f"{f.name} needs {dep}" for f in files for dep in _requirements(f) if dep not in carried | image]


def _download(folder: Path, pins: dict[str, str]) -> None:
    wanted = [f"{n}=={v}" for n, v in pins.items() if n not in BUILD_FROM_SDIST]
    platforms = [arg for p in TARGET_PLATFORMS for arg in ("--platform", p)]
    # --no-deps lets pip take an sdist where a package publishes no wheel (argbind, julius, ...): built below
    _pip("download", "--no-deps", "--prefer-binary", "--python-version", TARGET_PYTHON, "--implementation", "cp",
         *platforms, "-d", str(folder), *wanted)
    for sdist in [*folder.glob("*.tar.gz"), *folder.glob("*.zip")]:
        _pip("wheel", "--no-deps", "-w", str(folder), str(sdist))
        sdist.unlink()
    if sys.version_info[:2] != tuple(map(int, TARGET_PYTHON.split("."))):  # the dry mode's builds of compiled ones
        compiled = {wheel_dist(f)[0] for f in folder.glob("*.whl") if f.stem.split("-")[-2] != "none"}
        _pip("download", "--no-deps", "--only-binary=:all:", "-d", str(folder),
             *(f"{n}=={pins[n]}" for n in sorted(compiled) if n in pins))
    for name in BUILD_FROM_SDIST & set(pins):
        _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(folder), f"{name}=={pins[name]}")


def tree_bytes(repo: Path = REPO) -> int:
    """Size of the tracked working tree (what travels besides ignored folders)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=repo, check=True, capture_output=True).stdout.split(b"\0")
    return sum((repo / n.decode()).stat().st_size for n in names if n and (repo / n.decode()).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def copy_demo(src: Path, dst: Path) -> int:
    """The demo's shards and tokenizer into `dst` (replaced); returns its size."""
    missing = [part for part in DEMO_PARTS if not (src / part).is_dir()]
    if missing:
        raise SystemExit(f"[gpu-wheels] {src} has no {missing}: build the demo first (make data)")
    shutil.rmtree(dst, ignore_errors=True)
    for part in DEMO_PARTS:
        shutil.copytree(src / part, dst / part)
    return folder_bytes(dst)


def check_carry_size(folder: Path) -> dict:
    sizes = {"tree_bytes": tree_bytes(), "folder_bytes": folder_bytes(folder)}
    total = sizes["tree_bytes"] + sizes["folder_bytes"]
    print(f"[gpu-wheels] carried: tracked tree {sizes['tree_bytes'] / 2**20:.1f} MiB + {folder.name}/ "
          f"{sizes['folder_bytes'] / 2**20:.1f} MiB = {total / 2**20:.1f} MiB (limit {CARRY_LIMIT_BYTES / 2**20:.0f})")
    if total > CARRY_LIMIT_BYTES:
        raise SystemExit(f"[gpu-wheels] {total / 2**20:.1f} MiB to carry, over the {CARRY_LIMIT_BYTES / 2**20:.0f} MiB "
                         f"limit: drop wheels from wheels.txt or shrink the demo")
    return sizes


def prepare(folder: Path, demo: Path | None = None) -> dict:
    """Fill `folder` (idempotent: nothing is fetched when its manifest already matches the pins)."""
    pins = local_pins(read_names())
    folder.mkdir(parents=True, exist_ok=True)
    demo_bytes = copy_demo(demo, folder / "demo") if demo else None
    manifest_path = folder / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("pins") == pins and all((folder / f["file"]).exists() for f in manifest["files"]):
            print(f"[gpu-wheels] {folder} is up to date ({len(pins)} pins, {manifest['total_bytes'] / 2**20:.1f} MiB)")
            manifest.update(demo_bytes=demo_bytes, **check_carry_size(folder))
            manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
            return manifest
    _download(folder, pins)
    for stale in folder.glob("*.whl"):  # two versions of one package would stop the offline install
        name, version = wheel_dist(stale)
        if pins.get(name) != version:
            stale.unlink()
    files = sorted(folder.glob("*.whl"))
    device_files = [f for f in files if targets_device(f)]
    missing = sorted(set(pins) - {wheel_dist(f)[0] for f in device_files})
    problems = check_closure(device_files, read_image_packages())
    total = sum(f.stat().st_size for f in files)
    if missing or problems:
        raise SystemExit(f"[gpu-wheels] {folder} is not usable: no cp312 wheel for {missing}; "
                         f"unmet dependencies {problems}")
    manifest = {"target": f"CPython {TARGET_PYTHON}, manylinux x86_64", "pins": pins, "total_bytes": total,
                "files": [{"file": f.name, "name": wheel_dist(f)[0], "bytes": f.stat().st_size,
                           "device": targets_device(f)} for f in files],
                "demo_bytes": demo_bytes, **check_carry_size(folder)}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"[gpu-wheels] {len(files)} wheels, {total / 2**20:.1f} MiB in {folder}")
    return manifest


# ---- install (device / dry mode) ----------------------------------------------------------------
def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def make_venv(venv: Path) -> Path:
    """A fresh venv that sees the running interpreter's packages. `--system-site-packages` alone is
    not enough when that interpreter is itself a venv (the device's python3 is): the new venv would see
    the base Python's packages instead, so a .pth adds this interpreter's site directories."""
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    py = _venv_python(venv)
    venv_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip()
    if sys.prefix != sys.base_prefix:
        lines = [f"import site; site.addsitedir({d!r})" for d in site.getsitepackages()]
        (Path(venv_site) / "_gpu_check_parent_site.pth").write_text("\n".join(lines) + "\n")
    return py


def installed_versions(py: Path, names: list[str]) -> dict[str, str | None]:
    code = ("import importlib.metadata as md, json, sys\n"
            "def v(n):\n    try:\n        return md.version(n)\n"
            "    except md.PackageNotFoundError:\n        return None\n"
            "print(json.dumps({n: v(n) for n in sys.argv[1:]}))")
    out = subprocess.run([str(py), "-c", code, *names], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def _venv_pip(py: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")  # offline: no indexes at all
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--ignore-installed",
                    "--no-compile", *args],
                   check=True, env=env)


def install(folder: Path, venv: Path, force_all: bool) -> dict:
    """Venv + missing wheels (all of them with `force_all`, as the dry mode does) + the project."""
    t0 = time.perf_counter()
    py = make_venv(venv)
    manifest_path = folder / MANIFEST
    pins = json.loads(manifest_path.read_text())["pins"] if manifest_path.exists() else {}
    before = installed_versions(py, list(pins))
    chosen = sorted(pins) if force_all else sorted(n for n in pins if before[n] is None)
    if chosen:
        _venv_pip(py, "--find-links", str(folder), *(f"{n}=={pins[n]}" for n in chosen))
    _venv_pip(py, "--no-build-isolation", "-e", str(REPO))
    after = installed_versions(py, list(pins))
    return {"venv": str(venv), "python": str(py), "base_python": sys.executable, "wheel_folder": str(folder),
            "manifest_found": manifest_path.exists(), "present_before": before, "installed": chosen,
            "versions": after, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="fill the wheel folder (needs PyPI)")
    p.add_argument("--wheels", type=Path, default=REPO / ".gpu_wheels")
    p.add_argument("--demo", type=Path, help="the built demo dataset (make data) to copy into <wheels>/demo")
    i = sub.add_parser("install", help="make the check's venv from the wheel folder (offline)")
    i.add_argument("--wheels", type=Path, default=REPO / ".gpu_wheels")
    i.add_argument("--venv", type=Path, required=True)
    i.add_argument("--all", action="store_true", help="install every wheel, present or not (dry mode)")
    i.add_argument("--report", type=Path, required=True, help="JSON written here")
    args = parser.parse_args()
    if args.cmd == "prepare":
        prepare(args.wheels, args.demo)
        return
    report = install(args.wheels, args.venv, args.all)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[setup] venv {report['venv']} on {report['base_python']}: installed {report['installed'] or 'nothing'} "
          f"from {args.wheels} in {report['seconds']} s")


if __name__ == "__main__":
    main()

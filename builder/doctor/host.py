"""Reading a host's driver, GPUs, glibc and CPU, from files under a root and, on the running
machine, from the driver's own library and nvidia-smi.

Each fact has several sources because hosts differ: a container with `--gpus` sees
/proc/driver/nvidia and nvidia-smi but maybe not /sys/module; WSL2 has no /proc/driver/nvidia,
only libnvidia-ml; a host whose driver is not loaded still shows its GPUs on the PCI bus. Under
`--root DIR` only files are read (NVML and nvidia-smi would describe the running machine, not
the recorded tree), so tests replay recorded trees of hosts this machine is not.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
from pathlib import Path

from .. import compat
from ..cmd import probe
from .facts import Cpu, Driver, Gpu, HostFacts
from .isa import cpuinfo_flags, isa_level

_VERSION = re.compile(r"\d+(?:\.\d+)+")
_NVRM = re.compile(r"NVRM version:.*?Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)")
_LIBC = re.compile(rb"GNU C Library \([^)]*\) (?:stable )?release version (\d+)\.(\d+)")
_LIBC_DIRS = (
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "usr/lib64",
    "lib/aarch64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib",
    "usr/lib",
)
_NVIDIA_VENDOR = "0x10de"
_DISPLAY_CLASSES = ("0x0300", "0x0302")  # VGA-compatible and 3D controllers


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_host(root: Path = Path("/")) -> HostFacts:
    """Everything the doctor judges, read from `root` (the running machine when it is /)."""
    live = root.resolve() == Path("/")
    looked: list[str] = []
    driver = _driver_from_files(root, looked)
    nvml = _nvml() if live else None
    smi = _nvidia_smi() if live else None
    if live:
        looked.append(
            "libnvidia-ml.so.1: "
            + (f"driver {nvml[0].version}" if nvml and nvml[0] else "not loadable")
        )
        looked.append(
            "nvidia-smi: " + (f"driver {smi[0].version}" if smi else "not found or failed")
        )
    asked = [d for d in (nvml[0] if nvml else None, smi[0] if smi else None) if d is not None]
    driver = driver or (asked[0] if asked else None)
    if driver is not None and driver.cuda is None:  # the library or nvidia-smi can say it
        cuda = next((d.cuda for d in asked if d.cuda), None)
        driver = Driver(version=driver.version, source=driver.source, cuda=cuda)
    gpus = (nvml[1] if nvml and nvml[1] else ()) or (smi[1] if smi else ()) or _proc_gpus(root)
    pci = _pci_gpus(root)
    if driver is not None and not gpus:  # a driver with no per-GPU files: the bus still tells
        gpus = tuple(
            Gpu(index=i, name=f"NVIDIA GPU (PCI device {device})", cc=None, cc_source=None, bus=bus)
            for i, (bus, device) in enumerate(pci)
        )
    gpus = tuple(_with_cc(g) for g in gpus)
    glibc, glibc_source = _glibc(root, live)
    flags, model, arch = cpuinfo_flags(_text(root / "proc/cpuinfo") or "")
    level, missing = isa_level(flags) if arch == "x86_64" else (None, ())
    return HostFacts(
        root=str(root),
        live=live,
        driver=driver,
        gpus=gpus,
        pci_gpus=tuple(f"{bus} (device {device})" for bus, device in pci),
        glibc=glibc,
        glibc_source=glibc_source,
        os=_os_release(root).get("PRETTY_NAME"),
        cpu=Cpu(arch=arch, isa=level, model=model, missing_for_next=missing),
        looked=tuple(looked),
    )


def _driver_from_files(root: Path, looked: list[str]) -> Driver | None:
    found: Driver | None = None
    proc = root / "proc/driver/nvidia/version"
    text = _text(proc)
    m = _NVRM.search(text or "")
    looked.append(f"/{proc.relative_to(root)}: " + (f"driver {m.group(1)}" if m else "absent"))
    if m:
        found = Driver(version=m.group(1), source="/proc/driver/nvidia/version")
    sysmod = root / "sys/module/nvidia/version"
    ver = (_text(sysmod) or "").strip()
    ok = bool(_VERSION.fullmatch(ver))
    looked.append(f"/{sysmod.relative_to(root)}: " + (f"driver {ver}" if ok else "absent"))
    if ok and found is None:
        found = Driver(version=ver, source="/sys/module/nvidia/version")
    return found


def _proc_gpus(root: Path) -> tuple[Gpu, ...]:
    """GPUs the kernel module lists: /proc/driver/nvidia/gpus/<bus>/information."""
    out = []
    base = root / "proc/driver/nvidia/gpus"
    for i, info in enumerate(sorted(base.glob("*/information")) if base.is_dir() else ()):
        fields = dict(
            (k.strip(), v.strip())
            for k, _, v in (line.partition(":") for line in (_text(info) or "").splitlines())
        )
        minor = fields.get("Device Minor", "")
        out.append(
            Gpu(
                index=int(minor) if minor.isdigit() else i,
                name=fields.get("Model", "unknown NVIDIA GPU"),
                cc=None,
                cc_source=None,
                bus=fields.get("Bus Location", info.parent.name),
            )
        )
    return tuple(sorted(out, key=lambda g: g.index))


def _with_cc(gpu: Gpu) -> Gpu:
    if gpu.cc is not None:
        return gpu
    cc = compat.load().gpu_cc(gpu.name)
    return Gpu(
        index=gpu.index, name=gpu.name, cc=cc, cc_source="table" if cc else None, bus=gpu.bus
    )


def _pci_gpus(root: Path) -> tuple[tuple[str, str], ...]:
    """(bus, device id) of each NVIDIA display controller on the PCI bus, whether or not a
    driver is bound to it."""
    base = root / "sys/bus/pci/devices"
    found = []
    for dev in sorted(base.iterdir()) if base.is_dir() else ():
        vendor = (_text(dev / "vendor") or "").strip()
        klass = (_text(dev / "class") or "").strip()
        if vendor == _NVIDIA_VENDOR and klass.startswith(_DISPLAY_CLASSES):
            found.append((dev.name, (_text(dev / "device") or "").strip() or "?"))
    return tuple(found)


def _nvml() -> tuple[Driver | None, tuple[Gpu, ...]] | None:
    """The driver and GPUs as the driver's own library (NVML) reports them; None when the
    library is not there (no driver, or a container without it)."""
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    try:
        if lib.nvmlInit_v2() != 0:
            return None
    except AttributeError:
        return None
    try:
        buf = ctypes.create_string_buffer(96)
        driver = None
        ok = lib.nvmlSystemGetDriverVersion(buf, ctypes.c_uint(len(buf))) == 0
        if ok and _VERSION.fullmatch(buf.value.decode(errors="replace")):
            cuda_int = ctypes.c_int(0)
            cuda = None
            if lib.nvmlSystemGetCudaDriverVersion_v2(ctypes.byref(cuda_int)) == 0:
                cuda = f"{cuda_int.value // 1000}.{cuda_int.value % 1000 // 10}"
            driver = Driver(version=buf.value.decode(), source="libnvidia-ml.so.1", cuda=cuda)
        count = ctypes.c_uint(0)
        gpus = []
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0:
            for i in range(count.value):
                handle = ctypes.c_void_p()
                if lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(i), ctypes.byref(handle)):
                    continue
                name = "unknown NVIDIA GPU"
                if lib.nvmlDeviceGetName(handle, buf, ctypes.c_uint(len(buf))) == 0:
                    name = buf.value.decode(errors="replace")
                major, minor = ctypes.c_int(0), ctypes.c_int(0)
                ok = lib.nvmlDeviceGetCudaComputeCapability(
                    handle, ctypes.byref(major), ctypes.byref(minor)
                )
                cc = f"{major.value}.{minor.value}" if ok == 0 else None
                gpus.append(Gpu(index=i, name=name, cc=cc, cc_source="nvml" if cc else None))
        return driver, tuple(gpus)
    except (AttributeError, OSError, UnicodeDecodeError):
        return None
    finally:
        lib.nvmlShutdown()


def parse_nvidia_smi(csv: str) -> tuple[Driver | None, tuple[Gpu, ...]]:
    """nvidia-smi's `--query-gpu=index,name,compute_cap,pci.bus_id,driver_version
    --format=csv,noheader` output (compute_cap may be absent: drivers before 510)."""
    gpus: list[Gpu] = []
    driver = None
    for line in csv.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == 5:
            index, name, cc, bus, version = cells
        elif len(cells) == 4:
            (index, name, bus, version), cc = cells, ""
        else:
            continue
        valid_cc = bool(re.fullmatch(r"\d+\.\d+", cc))
        gpus.append(
            Gpu(
                index=int(index) if index.isdigit() else len(gpus),
                name=name,
                cc=cc if valid_cc else None,
                cc_source="nvidia-smi" if valid_cc else None,
                bus=bus or None,
            )
        )
        if driver is None and _VERSION.fullmatch(version):
            driver = Driver(version=version, source="nvidia-smi")
    return driver, tuple(gpus)


def _nvidia_smi() -> tuple[Driver, tuple[Gpu, ...]] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    fields = "index,name,compute_cap,pci.bus_id,driver_version"
    out = probe([exe, f"--query-gpu={fields}", "--format=csv,noheader"], timeout=30)
    if out is None:  # older drivers do not know compute_cap
        fields = fields.replace("compute_cap,", "")
        out = probe([exe, f"--query-gpu={fields}", "--format=csv,noheader"], timeout=30)
    driver, gpus = parse_nvidia_smi(out or "")
    if driver is None:
        return None
    banner = probe([exe], timeout=30) or ""
    m = re.search(r"CUDA Version:\s*(\d+\.\d+)", banner)
    return Driver(version=driver.version, source="nvidia-smi", cuda=m.group(1) if m else None), gpus


def _os_release(root: Path) -> dict[str, str]:
    text = _text(root / "etc/os-release") or _text(root / "usr/lib/os-release") or ""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def _glibc(root: Path, live: bool) -> tuple[compat.Version | None, str]:
    """The glibc of `root`: the running process's own on the live machine; else the version
    string inside root's libc.so.6; else the release os-release names, from the data."""
    if live:
        ver = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
        m = re.fullmatch(r"glibc (\d+)\.(\d+)", ver or "")
        if m:
            return (int(m.group(1)), int(m.group(2))), "the running C library"
    for sub in _LIBC_DIRS:
        libc = root / sub / "libc.so.6"
        try:
            data = libc.read_bytes()
        except OSError:
            continue
        m2 = _LIBC.search(data)
        if m2:
            return (int(m2.group(1)), int(m2.group(2))), f"/{sub}/libc.so.6"
    rel = _os_release(root)
    key = _os_key(rel.get("ID", ""), rel.get("VERSION_ID", ""))
    found = compat.load().os.get(key) if key else None
    if found is not None:
        return found.glibc, f"/etc/os-release ({found.name}), from builder/data/images.toml"
    return None, "unknown (no libc.so.6 with a version string, no known os-release)"


def _os_key(distro: str, version: str) -> str | None:
    """os-release ID and VERSION_ID -> the key of images.toml's [os] table."""
    major = version.split(".")[0]
    if distro == "ubuntu":
        return f"ubuntu{version}"
    if distro == "debian":
        return f"debian{major}"
    if distro in ("rhel", "centos", "almalinux"):
        return f"ubi{major}"
    if distro == "rocky":
        return f"rockylinux{major}"
    if distro == "amzn":
        return f"amazonlinux{version}"
    return None

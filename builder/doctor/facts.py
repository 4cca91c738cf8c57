"""What `prewheel doctor` found on a host: typed, frozen, and nothing else.

These records are separate from the build records (`builder.records`): they describe the
machine that will run the images, not anything built, and no cache key depends on them. They
are read once (`host.read_host`) and then only judged (`decide`), so the judging is testable on
recorded facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..compat import Version, show


@dataclass(frozen=True, kw_only=True)
class Driver:
    version: str  # "570.124.06", as the driver reports it
    source: str  # the file or interface it was read from
    cuda: str | None = None  # the newest CUDA the driver says it runs (NVML, nvidia-smi)


@dataclass(frozen=True, kw_only=True)
class Gpu:
    index: int
    name: str
    cc: str | None  # compute capability, "9.0"; None when nothing could tell
    cc_source: str | None  # "nvml", "nvidia-smi", or "table" (builder/data/gpus.toml)
    bus: str | None = None  # PCI bus id


@dataclass(frozen=True, kw_only=True)
class Cpu:
    arch: str  # x86_64, aarch64, ...
    isa: str | None  # the psABI level, x86-64-v3; None off x86-64
    model: str | None
    missing_for_next: tuple[str, ...] = ()  # cpuinfo flags the next level needs


@dataclass(frozen=True, kw_only=True)
class HostFacts:
    root: str
    live: bool  # the running machine (NVML and nvidia-smi asked), not a recorded tree
    driver: Driver | None
    gpus: tuple[Gpu, ...]
    pci_gpus: tuple[str, ...]  # NVIDIA display controllers on the PCI bus, driver or not
    glibc: Version | None
    glibc_source: str
    os: str | None  # PRETTY_NAME from os-release
    cpu: Cpu
    looked: tuple[str, ...]  # every driver source tried, with what it gave

    def to_json(self) -> dict[str, object]:
        return {
            "root": self.root,
            "live": self.live,
            "driver": None
            if self.driver is None
            else {
                "version": self.driver.version,
                "source": self.driver.source,
                "cuda": self.driver.cuda,
            },
            "looked": list(self.looked),
            "gpus": [
                {
                    "index": g.index,
                    "name": g.name,
                    "compute_capability": g.cc,
                    "cc_source": g.cc_source,
                    "bus": g.bus,
                }
                for g in self.gpus
            ],
            "pci_nvidia_devices": list(self.pci_gpus),
            "glibc": show(self.glibc) if self.glibc else None,
            "glibc_source": self.glibc_source,
            "os": self.os,
            "cpu": {
                "arch": self.cpu.arch,
                "isa_level": self.cpu.isa,
                "model": self.cpu.model,
                "missing_for_next_level": list(self.cpu.missing_for_next),
            },
        }

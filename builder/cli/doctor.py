"""`prewheel doctor`: does this host run my targets, and which one should it use?"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..config import load_config
from ..doctor import DoctorReport, check_pins, diagnose, read_host
from ..doctor.pins import allowed_variants
from ..doctor.scope import doctor_targets
from ..requirements import read_requirements
from ._options import config_option, json_option, target_option

_LEVEL = {"error": "red", "warning": "yellow"}


@click.command("doctor")
@config_option
@target_option
@click.option(
    "-r",
    "--requirements",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also check these pins (torch, tensorflow) against each target's CUDA variant.",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Read /proc, /sys and /etc under this directory (a recorded host); only files are "
    "read then, not NVML or nvidia-smi.",
)
@json_option
def command(
    config_path: Path | None,
    targets: tuple[str, ...],
    requirements: Path | None,
    root: Path,
    as_json: bool,
) -> None:
    """Check this host against the targets: NVIDIA driver, GPUs, glibc, CPU level.

    \b
    Says the newest CUDA the driver runs, the accelerator to use (cu130, cu128,
    ... or cpu), whether each target's arch list covers every GPU, which base
    images fit each target's policy, and warns about every mismatch. With -r, a
    pinned torch or tensorflow with no build for a target's CUDA is an error.
    --target also takes an accelerator (--target cu128) when no config is at hand.

    \b
    Exit 0: everything fits (warnings aside); 1: a target will not run here;
    2: bad input, or a pin has no build for a target.
    """
    config = load_config(config_path)
    selected = doctor_targets(config, targets)
    pins = read_requirements(requirements) if requirements else []
    allowed, allowed_why = allowed_variants(pins)
    report = diagnose(
        read_host(root),
        selected,
        pin_problems=check_pins(pins, selected),
        allowed=allowed,
        allowed_why=allowed_why,
    )
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _render(report)
    sys.exit(report.exit_code)


def _row(label: str, value: str) -> None:
    click.echo(f"  {label:<15} {value}")


def _render(report: DoctorReport) -> None:
    facts = report.facts
    where = "the running machine" if facts.live else "a recorded host"
    click.secho(f"prewheel doctor: {facts.root} ({where})", bold=True)
    click.secho("host", bold=True)
    _row("os", facts.os or "unknown")
    _row(
        "glibc",
        (".".join(map(str, facts.glibc)) if facts.glibc else "?") + f" ({facts.glibc_source})",
    )
    cpu = facts.cpu
    level = cpu.isa or f"{cpu.arch} (no x86-64 level)"
    if cpu.missing_for_next:
        level += f"; lacks {' '.join(cpu.missing_for_next)} for the next level"
    _row("cpu", f"{cpu.model or 'unknown model'}: {level}")
    if facts.driver:
        cuda = f", reports CUDA {facts.driver.cuda}" if facts.driver.cuda else ""
        _row("nvidia driver", f"{facts.driver.version} (from {facts.driver.source}{cuda})")
    else:
        _row("nvidia driver", "none (looked at: " + "; ".join(facts.looked) + ")")
    if not facts.gpus:
        _row(
            "gpus",
            "none" + (f"; on the PCI bus: {', '.join(facts.pci_gpus)}" if facts.pci_gpus else ""),
        )
    for gpu in facts.gpus:
        source = "prewheel's GPU table" if gpu.cc_source == "table" else gpu.cc_source
        cc = (
            f"compute capability {gpu.cc} (from {source})"
            if gpu.cc
            else "compute capability unknown"
        )
        _row(f"gpu {gpu.index}", f"{gpu.name}, {cc}")
    click.secho("cuda", bold=True)
    _row(
        "newest CUDA",
        f"{report.newest_native or 'none'} natively, {report.newest_compat or 'none'} with "
        "minor-version compatibility",
    )
    click.secho("recommendation", bold=True)
    rec = report.recommendation
    _row("accelerator", click.style(rec.accel, fg="green", bold=True) + f": {rec.why}")
    _row("targets", ", ".join(rec.targets) or "none of the targets checked")
    click.secho("targets", bold=True)
    for t in report.targets:
        runs = {
            "native": ("runs here", "green"),
            "minor-compat": ("runs through minor-version compatibility", "yellow"),
            "no": ("does not run here", "red"),
        }[t.runs]
        click.echo(f"  {t.name}: " + click.style(runs[0], fg=runs[1]))
        if t.gpus:
            coverage = ", ".join(f"gpu {i} {cov}" for i, cov in t.gpus)
            click.echo(f"      arch list {', '.join(t.arch_list) or '(empty)'}: {coverage}")
        fitting = ", ".join(f"{b.image} (glibc {b.glibc})" for b in t.bases if b.fits)
        click.echo(f"      bases: {fitting or 'none fits'}")
    if not report.problems:
        click.secho("no problems found", fg="green")
    for p in report.problems:
        click.secho(f"{p.level}: [{p.code}] {p.message}", fg=_LEVEL[p.level])

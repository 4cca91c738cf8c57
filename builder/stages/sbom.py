"""The SBOM every built wheel carries (PEP 770): a CycloneDX document in
`.dist-info/sboms/`, saying what went into the wheel: the sdist it came from (name, version,
sha256, upstream URL), the build dependencies at the versions the build installed, the
toolchain (compiler, nvcc where used, auditwheel, the build frontend) and every library
repair grafted into it.

The document is written by cyclonedx-python-lib (a well-kept implementation of the format,
read back by the same library) and is a function of the build's inputs only: its serial
number is derived from the cache key, its timestamp is the build's SOURCE_DATE_EPOCH, and
nothing of the machine (host name, paths, the time of the build) goes in, so two builds of
one sdist carry the same SBOM and stay bit-identical.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name

from ..records import GraftedLibrary, KeyInputs

# The member, relative to the `.dist-info` directory.
MEMBER = "sboms/prewheel.cdx.json"
FORMAT = "CycloneDX 1.6"
_ROLE = "prewheel:role"


@dataclass(frozen=True, kw_only=True)
class SbomInputs:
    """What the SBOM of one built wheel says; every field comes from the build's inputs."""

    name: str
    version: str
    cache_key: str
    inputs: KeyInputs
    sdist: str | None  # its file name
    sdist_url: str | None  # where it was fetched from upstream
    build_deps: Mapping[str, str]
    tools: Mapping[str, str]  # tool -> version, as the build record has them
    grafted: tuple[GraftedLibrary, ...]
    epoch: int  # SOURCE_DATE_EPOCH of the build


def _purl(name: str, version: str, **qualifiers: str) -> Any:
    from packageurl import PackageURL

    return PackageURL(
        type="pypi", name=canonicalize_name(name), version=version, qualifiers=qualifiers or None
    )


def document(sbom: SbomInputs) -> bytes:
    """The CycloneDX JSON document of `sbom`, deterministic (sorted keys, derived serial
    number and timestamp)."""
    from cyclonedx.model import (
        ExternalReference,
        ExternalReferenceType,
        HashAlgorithm,
        HashType,
        Property,
        XsUri,
    )
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentScope, ComponentType
    from cyclonedx.model.tool import ToolRepository
    from cyclonedx.output.json import JsonV1Dot6

    def sha256(content: str) -> list[HashType]:
        return [HashType(alg=HashAlgorithm.SHA_256, content=content)]

    def role(value: str) -> list[Property]:
        return [Property(name=_ROLE, value=value)]

    name, version = canonicalize_name(sbom.name), sbom.version
    refs = []
    if sbom.sdist_url:
        refs.append(
            ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(sbom.sdist_url))
        )
    sdist = Component(
        name=name,
        version=version,
        type=ComponentType.LIBRARY,
        bom_ref=f"sdist:{sbom.sdist or name}",
        purl=_purl(name, version, **({"file_name": sbom.sdist} if sbom.sdist else {})),
        hashes=sha256(sbom.inputs.sdist_sha256),
        external_references=refs,
        properties=role("sdist"),
    )
    deps = [
        Component(
            name=canonicalize_name(dep),
            version=ver,
            type=ComponentType.LIBRARY,
            bom_ref=f"build:{canonicalize_name(dep)}@{ver}",
            purl=_purl(dep, ver),
            scope=ComponentScope.EXCLUDED,  # used to build, not shipped
            properties=role("build-dependency"),
        )
        for dep, ver in sorted(sbom.build_deps.items())
    ]
    grafted = [
        Component(
            name=g.library,
            type=ComponentType.LIBRARY,
            bom_ref=f"grafted:{g.member}",
            hashes=sha256(g.sha256),
            properties=[*role("grafted-library"), Property(name="prewheel:member", value=g.member)],
        )
        for g in sbom.grafted
    ]
    bom = Bom(
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"prewheel:sbom:{sbom.cache_key}"),
        metadata=BomMetaData(
            timestamp=datetime.datetime.fromtimestamp(sbom.epoch, tz=datetime.timezone.utc),
            tools=ToolRepository(components=_toolchain(sbom)),
            component=Component(
                name=name,
                version=version,
                type=ComponentType.LIBRARY,
                bom_ref=f"wheel:{name}@{version}",
                purl=_purl(name, version),
                properties=[
                    Property(name="prewheel:cache_key", value=sbom.cache_key),
                    Property(name="prewheel:policy", value=sbom.inputs.policy),
                    Property(name="prewheel:accel", value=sbom.inputs.accel),
                ],
            ),
        ),
        components=[sdist, *deps, *grafted],
    )
    assert bom.metadata.component is not None
    bom.register_dependency(bom.metadata.component, [sdist, *grafted])
    text = JsonV1Dot6(bom).output_as_string()
    return (json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n").encode()


def _toolchain(sbom: SbomInputs) -> list[Any]:
    """The programs that made the wheel: the compiler (its version line), nvcc in a CUDA
    build, the interpreter, auditwheel, patchelf, the build frontend, prewheel."""
    from cyclonedx.model import Property
    from cyclonedx.model.component import Component, ComponentType

    out: list[tuple[str, str, str | None]] = []
    inputs = sbom.inputs
    if inputs.compiler:
        out.append(("compiler", inputs.compiler, None))
    if inputs.toolkit:
        out.append(("nvcc", inputs.toolkit, None))
    interp = inputs.interpreter
    out.append((interp.implementation, interp.version, interp.abi))
    for tool in ("auditwheel", "patchelf", "build", "pip", "prewheel"):
        if tool == "auditwheel":
            out.append((tool, inputs.auditwheel, None))
        elif tool in sbom.tools:
            out.append((tool, sbom.tools[tool], None))
    return [
        Component(
            name=tool,
            version=version,
            type=ComponentType.APPLICATION,
            bom_ref=f"tool:{tool}",
            properties=[Property(name="prewheel:abi", value=abi)] if abi else None,
        )
        for tool, version, abi in out
    ]


def summary(doc: Mapping[str, Any]) -> dict[str, int]:
    """How many components of each role a document lists (for the status page and `show`)."""
    counts: dict[str, int] = {}
    for comp in doc.get("components") or ():
        for prop in comp.get("properties") or ():
            if prop.get("name") == _ROLE:
                counts[prop["value"]] = counts.get(prop["value"], 0) + 1
    return counts

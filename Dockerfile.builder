# The prewheel builder image: compilers, interpreters (/opt/python/* on manylinux), prewheel.
#
#   docker build -f Dockerfile.builder -t prewheel-builder .
#   docker build -f Dockerfile.builder -t prewheel-builder:cu128 \
#       --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu24.04 .
#   docker run --rm -v "$PWD/wheelhouse:/wheelhouse" -v "$PWD:/work" prewheel-builder \
#       build -r requirements.txt
#   docker run --rm -p 8080:8080 -v "$PWD/wheelhouse:/wheelhouse" prewheel-builder \
#       serve --host 0.0.0.0
#
# Needs BuildKit (DOCKER_BUILDKIT=1 before Docker 23). Behind a TLS-intercepting proxy add
# --secret id=pip-cert,src=/path/to/ca-bundle.crt. Offline: put prewheel's dependency wheels
# (pip download -r requirements-builder.txt -d offline-wheels) in offline-wheels/ and add
# --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/src/offline-wheels.
ARG BASE_IMAGE=quay.io/pypa/manylinux_2_28_x86_64

FROM ${BASE_IMAGE} AS base
# Debian/Ubuntu bases (nvidia/cuda:*-devel) get a Python and a C/C++ toolchain; manylinux and
# bases that already have them are left alone.
ARG APT_PACKAGES="python3 python3-dev python3-venv python3-pip gcc g++ libc6-dev patch"
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
# hadolint ignore=DL3008,SC2086
RUN if command -v apt-get >/dev/null && ! dpkg -s ${APT_PACKAGES} >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${APT_PACKAGES} \
        && rm -rf /var/lib/apt/lists/*; \
    fi

FROM base AS install
# The interpreter prewheel itself runs on (not the ones it builds for): the newest manylinux
# CPython, else python3.
ARG PREWHEEL_PYTHON=""
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
COPY . /src
# An optional secret `pip-cert` (a CA bundle, for a TLS-intercepting proxy) never lands in a layer.
RUN --mount=type=secret,id=pip-cert \
    if [ -f /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi; \
    py="${PREWHEEL_PYTHON:-python3}"; \
    for p in /opt/python/cp31[0-9]-cp31[0-9]/bin/python; do \
        if [ -z "${PREWHEEL_PYTHON}" ] && [ -x "$p" ]; then py="$p"; fi; \
    done; \
    "$py" -m venv /opt/prewheel \
    && PIP_CONSTRAINT=/src/requirements-builder.txt \
       /opt/prewheel/bin/pip install --no-cache-dir --disable-pip-version-check /src

FROM base
COPY --from=install /opt/prewheel /opt/prewheel
ENV PATH=/opt/prewheel/bin:$PATH \
    PREWHEEL_WHEELHOUSE=/wheelhouse \
    PYTHONUNBUFFERED=1
VOLUME ["/wheelhouse"]
WORKDIR /work
EXPOSE 8080
ENTRYPOINT ["prewheel"]
CMD ["--help"]

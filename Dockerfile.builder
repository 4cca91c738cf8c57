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
#
# An older glibc than manylinux gives, with the base's own gcc (the container route to old
# policies; README "Older glibc in a container"): a Debian/Ubuntu base whose python3 is older
# than prewheel needs (Debian bullseye: glibc 2.31, Python 3.9) gets a CPython compiled here
# from a source tarball put in python-src/ of the context:
#   docker build -f Dockerfile.builder -t prewheel-builder:bullseye \
#       --build-arg BASE_IMAGE=debian:bullseye \
#       --build-arg PREWHEEL_PYTHON_SRC=python-src/python3.11_3.11.2.orig.tar.gz .
ARG BASE_IMAGE=quay.io/pypa/manylinux_2_28_x86_64

FROM ${BASE_IMAGE} AS base
# Debian/Ubuntu bases (nvidia/cuda:*-devel) get a Python and a C/C++ toolchain; manylinux and
# bases that already have them are left alone.
ARG APT_PACKAGES="python3 python3-dev python3-venv python3-pip gcc g++ libc6-dev patch"
# With PREWHEEL_PYTHON_SRC: what compiling CPython needs, whose libraries it then runs on.
ARG PREWHEEL_PYTHON_SRC=""
ARG PYTHON_BUILD_PACKAGES="make xz-utils libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev libsqlite3-dev libexpat1-dev"
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
# hadolint ignore=DL3008,SC2086
RUN pkgs="${APT_PACKAGES}"; \
    if [ -n "${PREWHEEL_PYTHON_SRC}" ]; then pkgs="$pkgs ${PYTHON_BUILD_PACKAGES}"; fi; \
    if command -v apt-get >/dev/null && ! dpkg -s $pkgs >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs \
        && rm -rf /var/lib/apt/lists/*; \
    fi

FROM base AS python
# prewheel's own CPython, compiled from PREWHEEL_PYTHON_SRC (a CPython source tarball in the
# context) where the base's python3 is too old; an empty /opt/prewheel-python otherwise. It
# runs prewheel and can be a target (/opt/prewheel-python/bin/python3.X); its wheels get the
# base's glibc and gcc, which is the point of an older base.
ARG PREWHEEL_PYTHON_SRC=""
# (cd, not WORKDIR: the build happens only with PREWHEEL_PYTHON_SRC.)
# hadolint ignore=DL3003
RUN --mount=type=bind,source=.,target=/ctx \
    mkdir -p /opt/prewheel-python; \
    if [ -n "${PREWHEEL_PYTHON_SRC}" ]; then \
        mkdir /tmp/cpython \
        && tar -xf "/ctx/${PREWHEEL_PYTHON_SRC}" -C /tmp/cpython --strip-components=1 \
        && cd /tmp/cpython \
        && ./configure --prefix=/opt/prewheel-python --disable-test-modules >/tmp/configure.log \
        && make -j"$(nproc)" >/tmp/make.log 2>&1 \
        && make install >/tmp/install.log 2>&1 \
        && cd / && rm -rf /tmp/cpython /tmp/*.log \
        && /opt/prewheel-python/bin/python3 -c 'import ssl, zlib, ctypes, bz2, lzma, sqlite3'; \
    fi

FROM python AS install
# The interpreter prewheel itself runs on (not the ones it builds for): PREWHEEL_PYTHON, else
# the one compiled above, else the newest manylinux CPython, else python3.
ARG PREWHEEL_PYTHON=""
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
COPY . /src
# An optional secret `pip-cert` (a CA bundle, for a TLS-intercepting proxy) never lands in a layer.
RUN --mount=type=secret,id=pip-cert \
    if [ -f /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi; \
    py="${PREWHEEL_PYTHON:-python3}"; \
    for p in /opt/python/cp31[0-9]-cp31[0-9]/bin/python /opt/prewheel-python/bin/python3; do \
        if [ -z "${PREWHEEL_PYTHON}" ] && [ -x "$p" ]; then py="$p"; fi; \
    done; \
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then \
        echo "prewheel needs Python >= 3.10; $py is $("$py" -V 2>&1). Pass a CPython source" \
             "tarball: --build-arg PREWHEEL_PYTHON_SRC=python-src/<file>.tar.gz" >&2; \
        exit 1; \
    fi; \
    "$py" -m venv /opt/prewheel \
    && PIP_CONSTRAINT=/src/requirements-builder.txt \
       /opt/prewheel/bin/pip install --no-cache-dir --disable-pip-version-check /src

FROM base
COPY --from=python /opt/prewheel-python /opt/prewheel-python
COPY --from=install /opt/prewheel /opt/prewheel
ENV PATH=/opt/prewheel/bin:$PATH \
    PREWHEEL_WHEELHOUSE=/wheelhouse \
    PYTHONUNBUFFERED=1
VOLUME ["/wheelhouse"]
WORKDIR /work
EXPOSE 8080
ENTRYPOINT ["prewheel"]
CMD ["--help"]

"""A program, not a module: run inside the sandbox's network namespace, it gives the command it
starts one way out, to prewheel's index proxy.

    python -I -S _forward.py --socket PATH -- COMMAND... (with @PORT@ in it)
    python -I -S _forward.py -- COMMAND...   # the loopback interface up, then COMMAND itself

The sandbox has no network, so pip cannot reach the upstream index while it resolves (and
runs `setup.py` of sdists to prepare their metadata). This forwarder listens on 127.0.0.1 inside
the namespace, on a port of its own, and relays each connection byte for byte to the unix
socket that prewheel's `indexproxy` serves outside (bind-mounted into the sandbox). The proxy,
not this relay, decides what may pass: GETs of the upstream index's pages and of the files those
pages link. `@PORT@` in COMMAND becomes the port; the exit status is COMMAND's.

Under `unshare --net` the loopback interface starts down; it is brought up first (bubblewrap
does that itself). Without `--socket` it does only that and becomes COMMAND (exec): package code
under `unshare --net` sees a loopback interface, as under bubblewrap (a test that binds
127.0.0.1, or netifaces' smoke test, fails without it). Standard library only; imports
nothing from `builder`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import subprocess
import sys
import threading

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


SUN_PATH_MAX = 107  # the bytes of a unix socket's address, without its final NUL


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (dst, src):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def relay(client: socket.socket, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
    back.start()
    pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def serve(listener: socket.socket, path: str) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=relay, args=(client, path), daemon=True).start()


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--":
        with contextlib.suppress(OSError):  # no loopback: the command finds that out itself
            loopback_up()
        try:
            os.execvp(argv[1], argv[1:])
        except OSError as exc:
            print(f"cannot run {argv[1]}: {exc.strerror}", file=sys.stderr)
            return 127
    if len(argv) < 4 or argv[0] != "--socket" or argv[2] != "--":
        print("usage: _forward.py [--socket PATH] -- COMMAND...", file=sys.stderr)
        return 2
    path, command = argv[1], argv[3:]
    if len(os.fsencode(path)) > SUN_PATH_MAX:  # a deep TMPDIR: reach it through a dir fd
        head, name = os.path.split(path)
        path = f"/proc/self/fd/{os.open(head, os.O_PATH | os.O_DIRECTORY)}/{name}"
    try:
        loopback_up()
    except OSError as exc:
        print(f"_forward: cannot bring up the loopback interface: {exc}", file=sys.stderr)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = str(listener.getsockname()[1])
    threading.Thread(target=serve, args=(listener, path), daemon=True).start()
    try:
        proc = subprocess.Popen([a.replace("@PORT@", port) for a in command])
    except OSError as exc:
        print(f"cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    rc = proc.wait()
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    os.environ.pop("PYTHONPATH", None)
    sys.exit(main(sys.argv[1:]))

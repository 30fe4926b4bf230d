"""A FUSE file system that never answers: a hung mount, as a stuck NFS
server makes one, for the tests (tests/service_faults.rs).

    python3 fuse_hang.py MOUNTPOINT LOG

Mounts at MOUNTPOINT (the caller's mount namespace, which needs the right
to mount: root, or `unshare -Urm`), answers the kernel's FUSE_INIT, and
then reads every request and answers none: whatever looks beneath the
mount point (a lookup, a stat) waits until this process is gone. LOG gets
"mounted" once the mount is there, then one line per request it holds
(its opcode). It exits when its parent does.

The kernel's FUSE protocol, as <linux/fuse.h> defines it; no library.
"""

import ctypes
import os
import struct
import sys
import threading
import time

FUSE_INIT = 26
FUSE_PARALLEL_DIROPS = 1 << 18
MS_NOSUID = 2
MS_NODEV = 4
IN_HEADER = struct.Struct("<IIQQIIIHH")  # fuse_in_header, 40 bytes
OUT_HEADER = struct.Struct("<IiQ")  # fuse_out_header, 16 bytes
# fuse_init_out (7.31): major, minor, max_readahead, flags, max_background,
# congestion_threshold, max_write, time_gran, max_pages, map_alignment,
# flags2, and unused words up to 64 bytes.
INIT_OUT = struct.Struct("<IIIIHHIIHHI7I")


def note(log, line):
    with open(log, "a") as f:
        f.write(line + "\n")


def exiting(parent):
    """Whether the parent has exited, or is exiting: its main thread gone
    (a zombie), its other threads waiting on this file system, which they
    do until it answers or is gone."""
    if os.getppid() != parent:
        return True
    try:
        with open(f"/proc/{parent}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def orphaned(parent):
    """Exits (and so ends the mount) once the parent exits."""
    while not exiting(parent):
        time.sleep(0.2)
    os._exit(0)


def main():
    mountpoint, log = sys.argv[1], sys.argv[2]
    fd = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"archgate-hang", mountpoint.encode(), b"fuse",
                  MS_NOSUID | MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        sys.exit(f"fuse_hang: mount {mountpoint}: {os.strerror(err)}")
    threading.Thread(target=orphaned, args=(os.getppid(),), daemon=True).start()
    note(log, "mounted")
    while True:
        request = os.read(fd, 1 << 20)
        length, opcode, unique = IN_HEADER.unpack_from(request)[:3]
        if opcode == FUSE_INIT:
            major, minor, readahead, flags = struct.unpack_from("<IIII", request, IN_HEADER.size)
            # Lookups in one directory in parallel (as NFS does them): each
            # waiting thread has its own request here.
            ours = flags & FUSE_PARALLEL_DIROPS
            body = INIT_OUT.pack(7, min(minor, 31), readahead, ours, 16, 12, 4096, 1, 1, 0, 0,
                                 *([0] * 7))
            os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), 0, unique) + body)
            continue
        # Held: never answered.
        note(log, str(opcode))


if __name__ == "__main__":
    main()

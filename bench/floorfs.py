"""The Python-FUSE floor: a minimal pyfuse3 passthrough filesystem over a local directory.

    .venv/bin/python -m bench.floorfs SOURCE MOUNTPOINT [--ready-file FILE]

No RPC, no replication, no metadata of its own: every request is answered with one or two
system calls on SOURCE, made in the handler itself (a local filesystem's metadata and
page cache answer in microseconds; a thread hop would cost more than it saves). It runs on the same stack as the shoalfs mount (pyfuse3 under
trio, the same FUSE options, the kernel keeping entries and attributes for 30 s as a
listening shoalfs mount does, and pages of files it opens), so the side-by-side
benchmark's ``floor`` column shows what Python FUSE itself costs on this machine: the
time of a row on the floor is the least a Python FUSE filesystem pays for the requests
that row makes reach Python. docs/performance.md divides by it.

It is the only writer of SOURCE while mounted, so the kernel may keep whatever it was
told for the whole timeout and keep every file's pages (``keep_cache``); no coherence
protocol is needed, which is exactly what a floor should leave out. Files are created as
the mount process's user (the benchmark runs as root), and extended attributes are not
supported (ENOTSUP): none of the benchmark's workloads sets one.

Inode numbers are SOURCE's own (one filesystem, so they are unique), except that SOURCE's
root is FUSE's root inode. The paths an inode is known by are kept while the kernel holds
a lookup on it (``forget`` drops them), and renames rewrite them.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

import pyfuse3
import trio

TIMEOUT = 30.0  # seconds the kernel keeps entries and attributes (shoalfs's lease)


def _fuse_error(exc: OSError) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(exc.errno or errno.EIO)


class Passthrough(pyfuse3.Operations):
    """Every request answered by a system call on the source directory."""

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = os.path.abspath(source)
        self.root_ino = os.lstat(self.source).st_ino
        self.paths: dict[int, set[str]] = {pyfuse3.ROOT_INODE: {self.source}}
        self.inode_at: dict[str, int] = {self.source: pyfuse3.ROOT_INODE}  # paths' reverse
        self.lookups: dict[int, int] = {}
        # open directory handles: (the directory's path, its names sorted, listed at the
        # first readdir of the handle, so a long listing costs one listdir)
        self.listings: dict[int, tuple[str, list[str]]] = {}
        self.next_fh = 1

    # -- inodes and paths ---------------------------------------------------------------

    def _kernel_ino(self, st_ino: int) -> int:
        if st_ino == self.root_ino:
            return pyfuse3.ROOT_INODE
        if st_ino == pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.EOVERFLOW)  # would shadow the root (never on ext4)
        return st_ino

    def _path(self, inode: int) -> str:
        known = self.paths.get(inode)
        if not known:
            raise pyfuse3.FUSEError(errno.ESTALE)
        return next(iter(known))

    def _child(self, parent_inode: int, name: bytes) -> str:
        return os.path.join(self._path(parent_inode), os.fsdecode(name))

    def _remember(self, inode: int, path: str) -> None:
        """The kernel now holds one more lookup of ``inode``, known by ``path``."""
        self.paths.setdefault(inode, set()).add(path)
        self.inode_at[path] = inode
        self.lookups[inode] = self.lookups.get(inode, 0) + 1

    def _entry(self, path: str, *, remember: bool) -> pyfuse3.EntryAttributes:
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise _fuse_error(exc) from None
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = self._kernel_ino(st.st_ino)
        entry.generation = 0
        entry.entry_timeout = TIMEOUT
        entry.attr_timeout = TIMEOUT
        entry.st_mode = st.st_mode
        entry.st_nlink = st.st_nlink
        entry.st_uid = st.st_uid
        entry.st_gid = st.st_gid
        entry.st_rdev = st.st_rdev
        entry.st_size = st.st_size
        entry.st_blksize = 4096
        entry.st_blocks = st.st_blocks
        entry.st_atime_ns = st.st_atime_ns
        entry.st_mtime_ns = st.st_mtime_ns
        entry.st_ctime_ns = st.st_ctime_ns
        if remember:
            self._remember(entry.st_ino, path)
        return entry

    def _renamed(self, old: str, new: str, is_dir: bool) -> None:
        """The known path ``old`` (and, for a directory, every known path under it) now
        lives under ``new``. Only a directory's rename looks at every known path."""
        prefix = old + os.sep
        moved = [p for p in self.inode_at if p.startswith(prefix)] if is_dir else []
        for p in [old, *moved]:
            inode = self.inode_at.pop(p, None)
            if inode is not None:
                self.paths[inode].discard(p)
                self.paths[inode].add(new + p[len(old) :])
                self.inode_at[new + p[len(old) :]] = inode

    def _removed(self, path: str) -> None:
        inode = self.inode_at.pop(path, None)
        if inode is not None:
            self.paths[inode].discard(path)

    # -- namespace ----------------------------------------------------------------------

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._entry(self._child(parent_inode, name), remember=True)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(self._path(inode), remember=False)

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        path = self._path(inode)
        try:
            if fields.update_size:
                if fh is not None:
                    os.ftruncate(fh, attr.st_size)
                else:
                    os.truncate(path, attr.st_size)
            if fields.update_mode:
                os.chmod(path, stat.S_IMODE(attr.st_mode), follow_symlinks=False)
            if fields.update_uid or fields.update_gid:
                uid = attr.st_uid if fields.update_uid else -1
                gid = attr.st_gid if fields.update_gid else -1
                os.chown(path, uid, gid, follow_symlinks=False)
            if fields.update_atime or fields.update_mtime:
                st = os.lstat(path)
                atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
                mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
                os.utime(path, ns=(atime, mtime), follow_symlinks=False)
        except OSError as exc:
            raise _fuse_error(exc) from None
        return self._entry(path, remember=False)

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        try:
            os.mknod(path, mode, rdev)
        except OSError as exc:
            raise _fuse_error(exc) from None
        return self._entry(path, remember=True)

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        try:
            os.mkdir(path, mode)
        except OSError as exc:
            raise _fuse_error(exc) from None
        return self._entry(path, remember=True)

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        try:
            os.symlink(os.fsdecode(target), path)
        except OSError as exc:
            raise _fuse_error(exc) from None
        return self._entry(path, remember=True)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        try:
            return os.fsencode(os.readlink(self._path(inode)))
        except OSError as exc:
            raise _fuse_error(exc) from None

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(new_parent_inode, new_name)
        try:
            os.link(self._path(inode), path, follow_symlinks=False)
        except OSError as exc:
            raise _fuse_error(exc) from None
        return self._entry(path, remember=True)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        try:
            os.unlink(path)
        except OSError as exc:
            raise _fuse_error(exc) from None
        self._removed(path)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        try:
            os.rmdir(path)
        except OSError as exc:
            raise _fuse_error(exc) from None
        self._removed(path)

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        if flags:  # RENAME_NOREPLACE and RENAME_EXCHANGE: not needed by the benchmark
            raise pyfuse3.FUSEError(errno.EINVAL)
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        try:
            os.rename(old, new)
            is_dir = stat.S_ISDIR(os.lstat(new).st_mode)
        except OSError as exc:
            raise _fuse_error(exc) from None
        self._removed(new)
        self._renamed(old, new, is_dir)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            left = self.lookups.get(inode, 0) - count
            if left > 0:
                self.lookups[inode] = left
            else:
                self.lookups.pop(inode, None)
                if inode != pyfuse3.ROOT_INODE:
                    for path in self.paths.pop(inode, ()):
                        if self.inode_at.get(path) == inode:
                            del self.inode_at[path]

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.source)
        out = pyfuse3.StatvfsData()
        for key in (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_favail",
            "f_namemax",
        ):
            setattr(out, key, getattr(st, key))
        return out

    # -- directories ----------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        fh, self.next_fh = self.next_fh, self.next_fh + 1
        self.listings[fh] = (self._path(inode), [])
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """Entries in name order; ``start_id`` is how many were handed out before. The
        names are listed afresh when a listing starts over (offset 0)."""
        base, names = self.listings[fh]
        if start_id == 0:
            try:
                names = sorted(os.listdir(base))
            except OSError as exc:
                raise _fuse_error(exc) from None
            self.listings[fh] = (base, names)
        for index in range(start_id, len(names)):
            path = os.path.join(base, names[index])
            try:
                entry = self._entry(path, remember=False)
            except pyfuse3.FUSEError:
                continue  # gone since the listing
            if not pyfuse3.readdir_reply(token, os.fsencode(names[index]), entry, index + 1):
                return
            self._remember(entry.st_ino, path)  # a readdirplus entry counts as a lookup

    async def releasedir(self, fh: int) -> None:
        self.listings.pop(fh, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        fd = os.open(self.listings[fh][0], os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- files ----------------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        try:
            fd = os.open(self._path(inode), flags & ~os.O_CREAT)
        except OSError as exc:
            raise _fuse_error(exc) from None
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child(parent_inode, name)
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_TRUNC, stat.S_IMODE(mode))
        except OSError as exc:
            raise _fuse_error(exc) from None
        return pyfuse3.FileInfo(fh=fd, keep_cache=True), self._entry(path, remember=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        try:
            return os.pread(fh, size, off)
        except OSError as exc:
            raise _fuse_error(exc) from None

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        try:
            return os.pwrite(fh, buf, off)
        except OSError as exc:
            raise _fuse_error(exc) from None

    async def flush(self, fh: int) -> None:
        pass  # every write already reached the source's page cache

    async def fsync(self, fh: int, datasync: bool) -> None:
        try:
            (os.fdatasync if datasync else os.fsync)(fh)
        except OSError as exc:
            raise _fuse_error(exc) from None

    async def release(self, fh: int) -> None:
        os.close(fh)


def fuse_options() -> set[str]:
    """The shoalfs mount's options (fusefs/mount.py), under this filesystem's name."""
    options = set(pyfuse3.default_options)
    options |= {"fsname=floorfs", "subtype=floorfs"}
    if os.geteuid() == 0:
        options.add("allow_other")
    return options


async def _serve() -> None:
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(stop_on_signal)
        await pyfuse3.main(min_tasks=4, max_tasks=32)  # as the shoalfs mount's default
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the local directory to pass through")
    parser.add_argument("mountpoint")
    parser.add_argument("--ready-file", default="", help="written with our pid once mounted")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.source) or not os.path.isdir(args.mountpoint):
        print("floorfs: SOURCE and MOUNTPOINT must be directories", file=sys.stderr)
        return 2
    pyfuse3.init(Passthrough(args.source), args.mountpoint, fuse_options())
    try:
        if args.ready_file:  # mounted now
            Path(args.ready_file).write_text(f"{os.getpid()}\n")
        trio.run(_serve)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""POSIX behaviour through real system calls on a real shoalfs mount: one test per rule."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import subprocess
import sys

import pytest

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def renameat2(old, new, flags):
    if libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def fails(code, fn, *args, **kwargs):
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, info.value


def as_user(uid: int, gid: int, code: str) -> subprocess.CompletedProcess[str]:
    """Run Python code as another user (the kernel's permission checks apply to it)."""
    prelude = f"import os, errno\nos.setgroups([])\nos.setgid({gid})\nos.setuid({uid})\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_create_write_read_and_sizes(here):
    path = here / "f"
    with open(path, "wb") as f:
        f.write(b"hello world")
    assert path.read_bytes() == b"hello world"
    st = path.stat()
    assert st.st_size == 11 and stat.S_ISREG(st.st_mode)
    with open(path, "r+b") as f:
        f.seek(6)
        f.write(b"there")
    assert path.read_bytes() == b"hello there"


def test_mode_and_owner_of_new_files_follow_the_caller(here):
    old = os.umask(0o022)
    try:
        fd = os.open(here / "m", os.O_CREAT | os.O_WRONLY, 0o666)
        os.close(fd)
        os.mkdir(here / "dm", 0o777)
    finally:
        os.umask(old)
    assert stat.S_IMODE((here / "m").stat().st_mode) == 0o644
    assert stat.S_IMODE((here / "dm").stat().st_mode) == 0o755
    os.chmod(here, 0o777)
    result = as_user(4242, 4343, f"open('{here}/byuser', 'w').close()")
    assert result.returncode == 0, result.stderr
    st = (here / "byuser").stat()
    assert (st.st_uid, st.st_gid) == (4242, 4343)


def test_mkdir_rmdir_and_their_errors(here):
    os.mkdir(here / "d")
    fails(errno.EEXIST, os.mkdir, here / "d")
    (here / "d" / "inner").write_bytes(b"")
    fails(errno.ENOTEMPTY, os.rmdir, here / "d")
    fails(errno.ENOTDIR, os.rmdir, here / "d" / "inner")
    fails(errno.ENOTDIR, os.mkdir, here / "d" / "inner" / "x")
    fails(errno.EISDIR, os.unlink, here / "d")
    fails(errno.ENOENT, os.rmdir, here / "nope")
    fails(errno.ENOENT, open, here / "nope" / "x", "w")
    os.unlink(here / "d" / "inner")
    os.rmdir(here / "d")
    assert not (here / "d").exists()


def test_directory_link_counts_and_parent_times(here):
    assert here.stat().st_nlink == 2
    before = here.stat()
    os.mkdir(here / "a")
    os.mkdir(here / "b")
    after = here.stat()
    assert after.st_nlink == 4
    assert after.st_mtime_ns > before.st_mtime_ns and after.st_ctime_ns > before.st_ctime_ns
    os.rmdir(here / "a")
    assert here.stat().st_nlink == 3


def test_a_directory_stat_right_after_each_change_is_the_changed_one(here):
    """After a create the mount answers the directory's next GETATTR from what the create
    returned (one round trip less per create): that answer must be the directory as the
    create left it, and changes of other kinds must still show at once."""
    for i in range(5):
        with open(here / f"f{i}", "w"):
            pass
        made = (here / f"f{i}").stat()
        now = here.stat()
        assert now.st_mtime_ns == made.st_ctime_ns == now.st_ctime_ns
    os.mkdir(here / "sub")
    assert here.stat().st_nlink == 3
    assert here.stat().st_mtime_ns == (here / "sub").stat().st_ctime_ns
    before = here.stat()
    with open(here / "g", "w"):
        pass
    os.unlink(here / "f0")
    after = here.stat()
    assert after.st_mtime_ns > before.st_mtime_ns
    assert after.st_mtime_ns >= (here / "g").stat().st_ctime_ns
    os.rmdir(here / "sub")
    assert here.stat().st_nlink == 2
    assert sorted(os.listdir(here)) == ["f1", "f2", "f3", "f4", "g"]
    for i in (1, 2, 3):  # unlinks answer the directory's next GETATTR the same way
        fd = os.open(here / f"f{i}", os.O_RDONLY)
        try:
            os.unlink(here / f"f{i}")
            assert here.stat().st_mtime_ns == os.fstat(fd).st_ctime_ns
        finally:
            os.close(fd)
    for i in range(3):
        os.mkdir(here / f"d{i}")
        assert here.stat().st_nlink == 3
        os.rmdir(here / f"d{i}")
        assert here.stat().st_nlink == 2
    assert sorted(os.listdir(here)) == ["f4", "g"]


def test_hard_links(here):
    (here / "a").write_bytes(b"shared")
    os.link(here / "a", here / "b")
    assert (here / "a").stat().st_nlink == 2
    assert (here / "a").stat().st_ino == (here / "b").stat().st_ino
    with open(here / "b", "ab") as f:
        f.write(b"!")
    assert (here / "a").read_bytes() == b"shared!"
    os.unlink(here / "a")
    assert (here / "b").stat().st_nlink == 1 and (here / "b").read_bytes() == b"shared!"
    os.mkdir(here / "d")
    fails(errno.EPERM, os.link, here / "d", here / "d2")


def test_symlinks(here):
    os.symlink("target/path", here / "l")
    assert os.readlink(here / "l") == "target/path"
    assert stat.S_ISLNK(os.lstat(here / "l").st_mode)
    (here / "real").write_bytes(b"via link")
    os.symlink("real", here / "l2")
    assert (here / "l2").read_bytes() == b"via link"


def test_rename_over_files_and_directories(here):
    (here / "a").write_bytes(b"A")
    (here / "b").write_bytes(b"B")
    os.rename(here / "a", here / "b")
    assert (here / "b").read_bytes() == b"A" and not (here / "a").exists()
    os.mkdir(here / "d1")
    os.mkdir(here / "d2")
    (here / "d1" / "x").write_bytes(b"x")
    os.rename(here / "d1", here / "d2")  # over an empty directory
    assert (here / "d2" / "x").read_bytes() == b"x"
    os.mkdir(here / "d3")
    fails(errno.ENOTEMPTY, os.rename, here / "d3", here / "d2")
    fails(errno.EISDIR, os.rename, here / "b", here / "d3")
    fails(errno.ENOTDIR, os.rename, here / "d3", here / "b")
    fails(errno.EINVAL, os.rename, here / "d2", here / "d2" / "sub")


def test_rename_noreplace_and_exchange(here):
    (here / "a").write_bytes(b"A")
    (here / "b").write_bytes(b"B")
    fails(errno.EEXIST, renameat2, here / "a", here / "b", RENAME_NOREPLACE)
    renameat2(here / "a", here / "c", RENAME_NOREPLACE)
    renameat2(here / "c", here / "b", RENAME_EXCHANGE)
    assert (here / "b").read_bytes() == b"A" and (here / "c").read_bytes() == b"B"
    fails(errno.ENOENT, renameat2, here / "b", here / "zz", RENAME_EXCHANGE)


def test_chmod_chown_and_nanosecond_times(here):
    path = here / "f"
    path.write_bytes(b"x")
    os.chmod(path, 0o4751)
    assert stat.S_IMODE(path.stat().st_mode) == 0o4751
    os.chown(path, 1234, 5678)
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_700_000_000_987_654_321))
    st = path.stat()
    assert st.st_atime_ns == 1_600_000_000_123_456_789
    assert st.st_mtime_ns == 1_700_000_000_987_654_321
    ctime = st.st_ctime_ns
    os.chmod(path, 0o600)
    assert path.stat().st_ctime_ns >= ctime


def test_times_set_on_an_open_written_file_outlast_its_close(here):
    """tar x, cp -p and rsync -t write a file, set its times through the open
    descriptor, then close it: the close stores the writes and must keep those times."""
    path = here / "timed"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"written before the times were set")
        os.utime(fd, ns=(1_500_000_000_000_000_001, 1_600_000_000_000_000_002))
        os.fchmod(fd, 0o640)
    finally:
        os.close(fd)
    st = path.stat()
    assert st.st_mtime_ns == 1_600_000_000_000_000_002
    assert st.st_atime_ns == 1_500_000_000_000_000_001
    assert path.read_bytes() == b"written before the times were set"
    with open(path, "ab") as out:  # a write after them moves the mtime again
        out.write(b"!")
    assert path.stat().st_mtime_ns > 1_600_000_000_000_000_002


def test_tar_extract_keeps_modes_and_times(here, tmp_path):
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    for i in range(5):
        f = source / "d" / f"f{i}"
        f.write_bytes(os.urandom(100 + 5000 * i))
        os.chmod(f, 0o600 + i)
        os.utime(f, ns=(1_400_000_000_000_000_000 + i, 1_400_000_000_000_000_000 + 10**9 * i))
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", "-C", source, "-cf", archive, "d"], check=True, timeout=60)
    subprocess.run(["tar", "-C", here, "-xf", archive], check=True, timeout=60)
    for i in range(5):
        want, got = (source / "d" / f"f{i}").stat(), (here / "d" / f"f{i}").stat()
        assert got.st_mtime_ns == want.st_mtime_ns // 10**9 * 10**9  # tar keeps seconds
        assert stat.S_IMODE(got.st_mode) == 0o600 + i
        assert (here / "d" / f"f{i}").read_bytes() == (source / "d" / f"f{i}").read_bytes()


def test_truncate_up_and_down(here):
    path = here / "t"
    path.write_bytes(b"abcdefghij")
    os.truncate(path, 4)
    assert path.read_bytes() == b"abcd"
    os.truncate(path, 8)
    assert path.read_bytes() == b"abcd\0\0\0\0"  # the old bytes must not come back
    with open(path, "r+b") as f:
        f.truncate(2)
        f.seek(0)
        assert f.read() == b"ab"


def test_open_with_o_trunc_empties_the_file(here):
    """open(..., "w") / O_TRUNC: the old bytes are gone, also past the new end, also when
    nothing is written, also for bytes still cached by the kernel or pending in the mount."""
    path = here / "t"
    path.write_bytes(b"B" * 100_000)
    path.write_bytes(b"A" * 50)  # shorter content over longer
    assert path.read_bytes() == b"A" * 50
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # truncate without writing
    os.close(fd)
    assert path.stat().st_size == 0 and path.read_bytes() == b""
    with open(path, "wb") as writer:  # pending (unflushed) data of another
        writer.write(b"C" * 10_000)  # open file on the same mount
        writer.flush()
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.close(fd)
        assert path.stat().st_size == 0
    os.truncate(path, 0)
    path.write_bytes(b"D" * 3)
    assert path.read_bytes() == b"DDD"


def test_sparse_files_read_zeros_and_store_nothing_for_holes(here, mounted):
    before = os.statvfs(mounted.mnt)
    path = here / "sparse"
    with open(path, "wb") as f:
        f.seek(10 << 20)
        f.write(b"end")
    st = path.stat()
    assert st.st_size == (10 << 20) + 3
    assert st.st_blocks * 512 < 1 << 20  # only the last piece is stored
    with open(path, "rb") as f:
        assert f.read(4096) == bytes(4096)
        f.seek(5 << 20)
        assert f.read(100) == bytes(100)
        f.seek(10 << 20)
        assert f.read() == b"end"
    after = os.statvfs(mounted.mnt)
    used = (before.f_bfree - after.f_bfree) * after.f_frsize
    assert used < 1 << 20
    os.truncate(path, 1 << 40)  # a terabyte: metadata only
    assert path.stat().st_size == 1 << 40


def test_files_over_4gib(here):
    path = here / "huge"
    with open(path, "wb") as f:
        f.seek(5 << 30)
        f.write(b"past 4 GiB")
    assert path.stat().st_size == (5 << 30) + 10
    with open(path, "rb") as f:
        f.seek(5 << 30)
        assert f.read() == b"past 4 GiB"
        f.seek((4 << 30) - 2)
        assert f.read(4) == bytes(4)


def test_o_append(here):
    path = here / "log"
    path.write_bytes(b"one\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"two\n")
    os.close(fd)
    assert path.read_bytes() == b"one\ntwo\n"


def test_unlinked_open_file_stays_readable_until_closed(here):
    path = here / "ghost"
    path.write_bytes(b"still here" * 1000)
    with open(path, "rb") as f:
        os.unlink(path)
        assert not path.exists()
        assert f.read() == b"still here" * 1000
        assert os.fstat(f.fileno()).st_nlink == 0
    fails(errno.ENOENT, os.stat, path)


def test_fifos_and_sockets(here):
    os.mkfifo(here / "fifo")
    assert stat.S_ISFIFO((here / "fifo").stat().st_mode)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(here / "sock"))
        assert stat.S_ISSOCK((here / "sock").stat().st_mode)
    finally:
        sock.close()


def test_xattrs_with_create_and_replace(here):
    path = here / "x"
    path.write_bytes(b"")
    os.setxattr(path, "user.color", b"blue")
    assert os.getxattr(path, "user.color") == b"blue"
    fails(errno.EEXIST, os.setxattr, path, "user.color", b"red", os.XATTR_CREATE)
    fails(errno.ENODATA, os.setxattr, path, "user.size", b"1", os.XATTR_REPLACE)
    os.setxattr(path, "user.color", b"red", os.XATTR_REPLACE)
    assert os.getxattr(path, "user.color") == b"red"
    assert os.listxattr(path) == ["user.color"]
    os.removexattr(path, "user.color")
    fails(errno.ENODATA, os.getxattr, path, "user.color")


def test_name_length_limits(here):
    (here / ("n" * 255)).write_bytes(b"ok")
    assert (here / ("n" * 255)).read_bytes() == b"ok"
    fails(errno.ENAMETOOLONG, open, here / ("n" * 256), "w")


def test_statfs_shows_capacity_and_use(mounted):
    st = os.statvfs(mounted.mnt)
    assert st.f_namemax == 255
    assert st.f_blocks * st.f_frsize == 20 << 30
    df = subprocess.run(
        ["df", "-B1", str(mounted.mnt)], capture_output=True, text=True, check=False
    ).stdout
    assert "shoalfs:default" in df and str(20 << 30) in df


def test_permissions_are_enforced_for_other_users(here):
    os.chmod(here, 0o755)
    (here / "private").write_bytes(b"secret")
    os.chmod(here / "private", 0o600)
    result = as_user(
        65534,
        65534,
        f"""
for action in (lambda: open('{here}/new', 'w'), lambda: open('{here}/private', 'rb'),
               lambda: os.chmod('{here}/private', 0o777)):
    try:
        action()
        print('allowed')
    except PermissionError as e:
        print(errno.errorcode[e.errno])
""",
    )
    assert result.stdout.split() == ["EACCES", "EACCES", "EPERM"], result.stderr


def test_sticky_directories_protect_other_users_files(here):
    os.chmod(here, 0o1777)
    (here / "roots").write_bytes(b"")
    result = as_user(
        65534,
        65534,
        f"""
open('{here}/mine', 'w').close()
os.unlink('{here}/mine')
try:
    os.unlink('{here}/roots')
    print('allowed')
except PermissionError as e:
    print(errno.errorcode[e.errno])
""",
    )
    assert result.stdout.split() == ["EPERM"], result.stderr
    assert (here / "roots").exists()


def test_setgid_directories(here):
    os.chown(here, 0, 777)
    os.chmod(here, 0o2775)
    (here / "f").write_bytes(b"")
    os.mkdir(here / "sub")
    assert (here / "f").stat().st_gid == 777
    assert (here / "sub").stat().st_gid == 777
    assert (here / "sub").stat().st_mode & stat.S_ISGID


def test_readdir_stays_correct_while_the_directory_changes(here):
    names = {f"f{i:04d}" for i in range(400)}
    for name in names:
        (here / name).write_bytes(b"")
    seen = []
    with os.scandir(here) as entries:
        for i, entry in enumerate(entries):
            seen.append(entry.name)
            if i == 50:
                for victim in sorted(names)[300:350]:
                    os.unlink(here / victim)
                (here / "late").write_bytes(b"")
    assert len(seen) == len(set(seen))  # nothing twice
    assert set(sorted(names)[:300]) | set(sorted(names)[350:]) <= set(seen) | {"late"}
    assert sorted(os.listdir(here)) == sorted((names - set(sorted(names)[300:350])) | {"late"})


def test_a_listing_of_several_pages_has_each_entry_once_with_its_attributes(here):
    """More entries than the meta role sends at once (1,000): pages are read ahead and
    what the kernel had no room for is kept (fusefs/listing.py); the attributes the kernel
    gets with each name (READDIRPLUS) are what stat then answers from its cache."""
    names = [f"f{i:05d}" for i in range(2100)]
    for i, name in enumerate(names):
        fd = os.open(here / name, os.O_CREAT | os.O_WRONLY, 0o600)
        os.fchmod(fd, 0o600 | (i % 8) << 3)
        if i % 300 == 0:
            os.write(fd, b"x" * i)
        os.close(fd)
    os.mkdir(here / "sub")
    seen = []
    with os.scandir(here) as entries:
        for entry in entries:
            seen.append(entry.name)
            if len(seen) == 10:  # changes through this mount during the listing
                os.chmod(here / names[1500], 0o640)
                os.unlink(here / names[1600])
    assert len(seen) == len(set(seen))
    assert set(names) - {names[1600]} | {"sub"} <= set(seen) <= set(names) | {"sub"}
    for i, name in enumerate(names):
        if i == 1600:
            fails(errno.ENOENT, os.lstat, here / name)
            continue
        st = os.lstat(here / name)
        mode = 0o640 if i == 1500 else 0o600 | (i % 8) << 3
        assert (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode)) == (stat.S_IFREG, mode), name
        assert st.st_size == (i if i % 300 == 0 else 0), name
    assert stat.S_ISDIR(os.lstat(here / "sub").st_mode)


def test_exdev_across_volumes(here, mounted, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (here / "f").write_bytes(b"x")
    fails(errno.EXDEV, os.rename, here / "f", other / "f")


def mount_tiny(mounted, mnt) -> None:
    name = mnt.name.removeprefix("mnt-")
    mounted.shoal(
        "mount",
        name,
        str(mnt),
        "--workdir",
        str(mounted.workdir),
        "--log-file",
        str(mounted.workdir / "logs" / f"{name}.log"),
    )


@pytest.fixture
def tiny_volume(mounted, request):
    """A volume of its own with an 8 MiB quota, mounted at mnt-<its name>."""
    name = f"tiny-{request.node.name[:40].replace('_', '-')}"
    mounted.shoal(
        "volume",
        "create",
        name,
        "--capacity",
        "8MiB",
        "--chunk-size",
        "1MiB",
        "--workdir",
        str(mounted.workdir),
    )
    mnt = mounted.workdir / f"mnt-{name}"
    mnt.mkdir()
    mount_tiny(mounted, mnt)
    yield mnt
    mounted.shoal("umount", str(mnt))


def test_enospc_past_the_quota_and_space_comes_back(tiny_volume):
    path = tiny_volume / "filler"
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)  # unbuffered: count what arrived
    with pytest.raises(OSError) as info:
        for _ in range(16):
            written += os.write(fd, os.urandom(1 << 20))
    assert info.value.errno == errno.ENOSPC
    assert 6 << 20 <= written <= 8 << 20
    os.close(fd)  # what fitted is committed
    assert path.stat().st_size == written
    st = os.statvfs(tiny_volume)
    assert st.f_bfree * st.f_frsize < 2 << 20
    os.unlink(path)
    (tiny_volume / "after").write_bytes(os.urandom(4 << 20))  # the space is back
    assert (tiny_volume / "after").stat().st_size == 4 << 20


def fill_up(path) -> None:
    """Write to ``path`` until the volume refuses: then less than 64 KiB is free."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as info:
            for _ in range(1024):
                os.write(fd, os.urandom(64 << 10))
        assert info.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_an_overwrite_a_full_volume_cannot_store_is_dropped_and_told_to_every_writer(
    tiny_volume, mounted
):
    """The 256 KiB written into a stored 1 MiB piece are kept beside it (a patch): on a full
    volume the commit is refused. Readers must then see the stored file, never the bytes no
    remount would show; each handle open for writing hears of it once; read-only closes do
    not fail because of it."""
    kept = tiny_volume / "kept"
    old = os.urandom(2 << 20)
    kept.write_bytes(old)
    fill_up(tiny_volume / "filler")
    opened = []

    def track(fd: int) -> int:
        opened.append(fd)
        return fd

    def closed(fd: int) -> None:
        opened.remove(fd)
        os.close(fd)

    try:
        reader = track(os.open(kept, os.O_RDONLY))
        other = track(os.open(kept, os.O_WRONLY))  # told at its next write
        later = track(os.open(kept, os.O_WRONLY))  # told at its close
        fd = track(os.open(kept, os.O_WRONLY))
        os.pwrite(fd, os.urandom(256 << 10), 4096)
        # this mount sees them meanwhile
        assert os.pread(reader, 8192, 4096) != old[4096 : 4096 + 8192]
        fails(errno.ENOSPC, os.fsync, fd)
        assert kept.read_bytes() == old
        assert os.pread(reader, 2 << 20, 0) == old
        assert os.fstat(reader).st_size == 2 << 20
        closed(reader)  # read-only: nothing of its own to store
        with open(kept, "rb") as f:  # opened and closed after it: fine
            assert f.read(4096) == old[:4096]
        fails(errno.ENOSPC, os.pwrite, other, b"x", 0)
        closed(other)  # told once
        fails(errno.ENOSPC, closed, later)
        closed(fd)  # told by its fsync
    finally:
        for fd in opened:
            try:
                os.close(fd)
            except OSError:
                pass
    mounted.shoal("umount", str(tiny_volume))
    mount_tiny(mounted, tiny_volume)
    assert kept.read_bytes() == old


def test_copy_a_real_source_tree_and_read_it_back(here):
    import filecmp
    import shutil

    source = os.path.dirname(os.__file__) + "/email"  # a package of the standard library
    shutil.copytree(source, here / "email", symlinks=True)
    compared = filecmp.dircmp(source, here / "email")

    def same(c: filecmp.dircmp) -> bool:
        _match, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        return (
            not mismatch
            and not errors
            and not c.left_only
            and not c.right_only
            and all(same(sub) for sub in c.subdirs.values())
        )

    assert same(compared)

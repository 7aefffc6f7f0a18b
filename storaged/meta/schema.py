"""The meta database, documented column by column. This file is the one place it is described.

Every mutating filesystem operation is one SQLite transaction (``BEGIN IMMEDIATE`` ...
``COMMIT``) in WAL mode with ``synchronous=NORMAL``: when the meta role answers, the change is
committed (it survives a crash of the process), on disk within 50 ms, and at once for the
calls that promise it (``fs.sync``, volume and snapshot changes: groupcommit.py); a crash
at any point leaves the database as before or after the operation.
Times are integer nanoseconds since the epoch, taken from the meta server's clock unless a
client sets them explicitly (utimens), so two mounts never disagree about "now".

meta_info — facts about the database itself, as key/value text
    schema_version   the layout version; older databases are migrated forward at open
    cluster_id       random hex chosen when the database is created: names this cluster
                     (the CSI driver's topology segment), so two clusters never look alike
    last_sync        when the WAL was last made durable (db.make_durable writes it: an
                     fsync needs a write to commit)

volumes — one row per volume (a CSI volume, a mount target)
    id           integer key
    name         unique name (the CSI volume id / what `shoal mount` takes)
    capacity     quota in bytes: writes that would store more fail with ENOSPC
    replicas     R: each chunk is written to R distinct chunk servers
    chunk_size   bytes per chunk; file offset o lives in chunk o // chunk_size
    root         the inode id of the volume's root directory
    used_bytes   bytes the volume's chunk maps reference (sum of inodes.stored); holes and
                 replicas are not counted, so `df` shows what users wrote
    used_inodes  number of inodes in the volume
    created_ns   creation time
    params       JSON text: the parameters the volume was created with (StorageClass)
    kind         'volume', or 'snapshot': a frozen copy of a volume's tree (inodes, dentries,
                 xattrs and chunk rows copied; the chunks themselves shared, never copied).
                 Snapshots are never mounted or written; they are the source of new volumes
    source       where the contents came from: for a snapshot, the source volume's name; for
                 a volume, 'snapshot:NAME' or 'volume:NAME' (a restore or a clone), or ''

inodes — files, directories, symlinks, fifos, sockets, devices
    id           inode number (AUTOINCREMENT: never reused, so a stale handle never reaches
                 a different file)
    volume       owning volume
    mode         st_mode: type bits and permission bits
    uid, gid     owner
    nlink        hard links: dentries pointing here, plus 1 ('.') and 1 per subdirectory
                 ('..') for directories. An inode with nlink 0 is an orphan: unlinked but
                 maybe still open somewhere; removed by `forget`
    size         st_size in bytes
    stored       bytes referenced by this inode's chunk rows and slices (for quota and
                 st_blocks; a slice over stored bytes counts again)
    atime_ns, mtime_ns, ctime_ns   timestamps
    rdev         device number for character and block devices, else 0
    target       symlink target bytes, NULL for other types

dentries — directory entries
    id           integer key; also the readdir cookie: listing a directory goes by id, so
                 entries added or removed during a listing never make it skip or repeat one
    parent       the directory's inode
    name         the entry's name, bytes (1..255, no '/', no NUL)
    inode        the inode it names
    (indexed by (parent, name) for lookups, by inode for its names, and by parent alone,
    which SQLite orders by id within a parent: a readdir page starts where the last one
    ended instead of scanning and sorting the whole directory again)

xattrs — extended attributes
    inode, name (bytes), value (bytes)

chunks — the chunk map: which chunk holds each chunk_size piece of a file
    inode        the file
    idx          piece number: bytes [idx*chunk_size, (idx+1)*chunk_size)
    chunk_id     BLAKE3 id of the chunk's content (on R chunk servers)
    start        where in the piece the chunk's bytes begin; the piece's bytes before it
                 read as zeros (clients store a piece without its leading and trailing zeros,
                 so holes inside a piece take no space)
    length       valid bytes of the chunk for this file, from ``start``; bytes past it read
                 as zeros. A truncate shortens this instead of rewriting the chunk.
                 No row (and no slices): the whole piece is a hole

slices — small writes laid over a piece without rewriting it (a random writer's 4 KiB
         must not cost a rewrite of the 4 MiB piece under it). A piece's bytes are its
         chunks row (or zeros), then each slice over them in ``seq`` order. A mount packs
         the slices of one flush (of many pieces, of one file) into one chunk; writing the
         whole piece again (which a mount does once it has many slices) deletes them.
    inode, idx   the piece, as in chunks
    seq          order: a higher seq lies over lower ones
    chunk_id     the chunk holding the slice's bytes
    start        where in the piece the slice begins
    length       bytes of the slice (a truncate shortens or deletes slices past the size)
    offset       where in the chunk the slice's bytes begin

bad_copies — copies a client found missing or corrupted, for repair to replace
    chunk_id     the chunk
    server_id    the server whose copy failed
    reason       what the client saw (CORRUPTED, NOT_FOUND, ...)
    reported_ns  when (the latest report wins)

servers — the cluster map
    id           the chunk server's server-id (from its data directory)
    address      where it listens
    zone         failure domain
    capacity, used, free   bytes, as last reported
    chunks       chunk count, as last reported
    last_seen_ns time of the last heartbeat; a server silent for longer than the heartbeat
                 timeout is down
    state        'up' or 'down' as last decided by the liveness check
    draining     1 when an administrator is emptying the server (shoal node drain): new
                 writes avoid it, and repair does not count its copies toward R, so every
                 chunk gets R copies elsewhere; kept across heartbeats

mount_sessions — the mounts that may hold files open (see storaged/meta/sessions.py)
    id           the session id a mount got from session.open; the row goes when the session
                 is closed or expires. What a session holds stays in memory: after a
                 restart, the meta role deletes nothing until each recorded session has
                 registered again or expired
    description  the mount's host, mountpoint and pid, for logs
    opened_ns    when the session was opened
"""

SCHEMA_VERSION = 5

MOUNT_SESSIONS = """CREATE TABLE IF NOT EXISTS mount_sessions (
    id TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    opened_ns INTEGER NOT NULL
)"""

# Statements that take a database from version N to N+1, applied in order at open.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "ALTER TABLE volumes ADD COLUMN kind TEXT NOT NULL DEFAULT 'volume'",
        "ALTER TABLE volumes ADD COLUMN source TEXT NOT NULL DEFAULT ''",
    ],
    2: ["ALTER TABLE servers ADD COLUMN draining INTEGER NOT NULL DEFAULT 0"],
    3: [],  # the slices table (created by the DDL below); a version 3 storaged must refuse
    # An older storaged kept its mount sessions in memory only: stand for them with one
    # restored session, so nothing is deleted until they could have registered again.
    4: [
        MOUNT_SESSIONS,
        (
            "INSERT INTO mount_sessions VALUES ('before-schema-5', "
            "'the mounts of a storaged that did not record them', 0)"
        ),
    ],
}

DDL = (
    """
CREATE TABLE IF NOT EXISTS meta_info (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    capacity INTEGER NOT NULL,
    replicas INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    root INTEGER NOT NULL,
    used_bytes INTEGER NOT NULL DEFAULT 0,
    used_inodes INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    kind TEXT NOT NULL DEFAULT 'volume',
    source TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS inodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    volume INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    nlink INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    stored INTEGER NOT NULL DEFAULT 0,
    atime_ns INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    rdev INTEGER NOT NULL DEFAULT 0,
    target BLOB
);
CREATE INDEX IF NOT EXISTS inodes_volume ON inodes(volume);
CREATE TABLE IF NOT EXISTS dentries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER NOT NULL,
    name BLOB NOT NULL,
    inode INTEGER NOT NULL,
    UNIQUE (parent, name)
);
CREATE INDEX IF NOT EXISTS dentries_inode ON dentries(inode);
CREATE INDEX IF NOT EXISTS dentries_by_parent ON dentries(parent);
CREATE TABLE IF NOT EXISTS xattrs (
    inode INTEGER NOT NULL,
    name BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (inode, name)
);
CREATE TABLE IF NOT EXISTS chunks (
    inode INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    chunk_id TEXT NOT NULL,
    start INTEGER NOT NULL DEFAULT 0,
    length INTEGER NOT NULL,
    PRIMARY KEY (inode, idx)
);
CREATE INDEX IF NOT EXISTS chunks_by_id ON chunks(chunk_id);
CREATE TABLE IF NOT EXISTS slices (
    inode INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    chunk_id TEXT NOT NULL,
    start INTEGER NOT NULL,
    length INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    PRIMARY KEY (inode, idx, seq)
);
CREATE INDEX IF NOT EXISTS slices_by_id ON slices(chunk_id);
CREATE TABLE IF NOT EXISTS bad_copies (
    chunk_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    reported_ns INTEGER NOT NULL,
    PRIMARY KEY (chunk_id, server_id)
);
CREATE TABLE IF NOT EXISTS servers (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    zone TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    used INTEGER NOT NULL,
    free INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    state TEXT NOT NULL,
    draining INTEGER NOT NULL DEFAULT 0
);
"""
    + MOUNT_SESSIONS
    + ";\n"
)

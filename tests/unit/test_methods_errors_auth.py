"""Parameter checking, error mapping and the authentication proofs."""

from __future__ import annotations

import os
import re

import pytest

from storaged.rpc import auth, errors
from storaged.rpc.methods import MethodTable


async def sample(name: str, data: bytes, count: int = 1, tag: str | None = None) -> None:
    return None


async def flag(on: bool, ratio: float) -> None:
    return None


def table() -> MethodTable:
    t = MethodTable()
    t.add("sample", sample)
    t.add("flag", flag, public=True)
    return t


def test_bind_accepts_required_and_optional_parameters():
    m = table().get("sample")
    assert m.bind(["n", b"d"]) == ["n", b"d"]
    assert m.bind(["n", b"d", 3, None]) == ["n", b"d", 3, None]
    assert m.usage() == "sample(name, data, [count], [tag])"


@pytest.mark.parametrize(
    "params, fragment",
    [
        ([], "takes 2..4 parameters, got 0"),
        (["n", b"d", 1, None, 5], "got 5"),
        ([b"n", b"d"], "name must be str, got bytes"),
        (["n", "d"], "data must be bytes, got str"),
        (["n", b"d", True], "count must be int, got bool"),
        (["n", b"d", 1.5], "count must be int, got float"),
        (["n", b"d", 1, 7], "tag must be str or NoneType, got int"),
        (["n", b"d", 1 << 63], "count must be int in -2\\^63..2\\^63-1, got int"),
    ],
)
def test_bind_refuses_wrong_counts_and_types_with_a_clear_message(params, fragment):
    with pytest.raises(errors.InvalidArgument, match=fragment.replace("[", r"\[")):
        table().get("sample").bind(params)


def test_bool_is_not_an_int_but_an_int_is_a_float():
    m = table().get("flag")
    assert m.bind([True, 1]) == [True, 1]
    with pytest.raises(errors.InvalidArgument):
        m.bind([1, 1.0])


def test_a_typed_list_checks_every_item():
    """fs.forget's inode list once let a map through to a dict lookup (INTERNAL)."""

    async def forget(inos: list[int], names: list[str] | None = None) -> None: ...

    t = MethodTable()
    t.add("forget", forget)
    m = t.get("forget")
    assert m.bind([[1, 2], ["a"]]) == [[1, 2], ["a"]]
    for params, fragment in (
        ([[1, {}]], "inos[1] must be int, got dict"),
        ([[1 << 63]], "inos[0] must be int in -2^63..2^63-1"),
        ([[True]], "inos[0] must be int, got bool"),
        ([[1], [b"x"]], "names[0] must be str, got bytes"),
    ):
        with pytest.raises(errors.InvalidArgument, match=re.escape(fragment)):
            m.bind(params)


def test_unknown_method_and_public_flag():
    t = table()
    with pytest.raises(errors.MethodNotFound):
        t.get("nope")
    assert t.get("flag").public and not t.get("sample").public
    with pytest.raises(ValueError):
        t.add("flag", flag)


@pytest.mark.parametrize(
    "cls",
    [
        errors.Internal,
        errors.InvalidRequest,
        errors.MethodNotFound,
        errors.InvalidArgument,
        errors.Unauthenticated,
        errors.AuthFailed,
        errors.NotFound,
        errors.HashMismatch,
        errors.Corrupted,
        errors.NoSpace,
        errors.Busy,
    ],
)
def test_every_error_crosses_the_wire_as_its_own_type(cls):
    wire = cls("details").to_wire()
    assert set(wire) == {"code", "message"}
    back = errors.error_from_wire(wire)
    assert type(back) is cls and back.message == "details"


def test_unknown_and_foreign_errors_are_still_exceptions():
    unknown = errors.error_from_wire({"code": "FROM_THE_FUTURE", "message": "m"})
    assert isinstance(unknown, errors.RemoteError) and unknown.code == "FROM_THE_FUTURE"
    foreign = errors.error_from_wire("plain string error")
    assert isinstance(foreign, errors.RpcError) and "plain string error" in str(foreign)


def test_proofs_depend_on_secret_nonce_and_direction():
    nonce_a, nonce_b = auth.new_nonce(), auth.new_nonce()
    secret = b"s" * 32
    assert auth.client_proof(secret, nonce_a) == auth.client_proof(secret, nonce_a)
    assert auth.client_proof(secret, nonce_a) != auth.client_proof(secret, nonce_b)
    assert auth.client_proof(secret, nonce_a) != auth.client_proof(b"t" * 32, nonce_a)
    # a server proof is never usable as a client proof
    assert auth.server_proof(secret, b"", nonce_a) != auth.client_proof(secret, nonce_a)


def test_secret_files_must_be_private_and_long_enough(tmp_path):
    good = tmp_path / "good"
    auth.write_secret_file(good)
    assert len(auth.load_secret(good)) == 64
    assert os.stat(good).st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        auth.write_secret_file(good)
    short = tmp_path / "short"
    short.write_text("tiny")
    short.chmod(0o600)
    with pytest.raises(ValueError, match="shorter"):
        auth.load_secret(short)
    public = tmp_path / "public"
    public.write_text("x" * 40)
    public.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        auth.load_secret(public)
    with pytest.raises(ValueError, match="does not exist"):
        auth.load_secret(tmp_path / "missing")

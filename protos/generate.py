"""Regenerate protos/csi_pb2.py, its type stub csi_pb2.pyi and protos/csi_pb2_grpc.py from
protos/csi.proto.

The generated modules are committed so that installing shoalfs needs no compiler; a test
runs this generator into a temporary directory and fails when the committed files differ,
so the .proto and the code can never drift apart. grpcio-tools (a test dependency, pinned
in pyproject.toml) carries the compiler, so its output is the same on every machine.

    python -m protos.generate            # rewrite the committed modules
    python -m protos.generate --out DIR  # write them under DIR/protos instead
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("csi_pb2.py", "csi_pb2.pyi", "csi_pb2_grpc.py")  # (the stub: for mypy)


def generate(out_dir: Path) -> list[Path]:
    """Compile csi.proto into ``out_dir/protos/`` and return the files written."""
    from grpc_tools import protoc  # imported here: only needed to regenerate

    include = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        # Compile from a copy under a 'protos/' prefix so the generated grpc module imports
        # 'from protos import csi_pb2' (a package import), not a top-level 'csi_pb2'.
        src = Path(tmp) / "protos"
        src.mkdir()
        shutil.copy(ROOT / "protos" / "csi.proto", src / "csi.proto")
        target = out_dir / "protos"
        target.mkdir(parents=True, exist_ok=True)
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{tmp}",
                f"-I{include}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                "protos/csi.proto",
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code}")
    return [target / name for name in GENERATED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT,
        help="directory that receives protos/csi_pb2*.py (default: the source tree)",
    )
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

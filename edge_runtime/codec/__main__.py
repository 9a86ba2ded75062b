"""Decode one payload for debugging: ``python -m edge_runtime.codec [FILE | --hex HEX]``.

Prints the payload's JSON form (:func:`~edge_runtime.codec.payloads.decode_payload`) on stdout
and its header on stderr; reads stdin when given neither a file nor ``--hex``. Exit status 1
on a payload that does not decode.

Example::

    python -m edge_runtime.codec payload.bin          # or: --hex ED5201...

or, from Python::

    from edge_runtime.codec.__main__ import main

    main(["--hex", payload.hex()])
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_runtime.codec.envelope import CodecError, read_header
from edge_runtime.codec.payloads import decode_payload


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_runtime.codec [FILE | --hex HEX]``: print a payload's JSON form."""
    parser = argparse.ArgumentParser(prog="python -m edge_runtime.codec", description=main.__doc__)
    parser.add_argument("file", nargs="?", type=Path, help="a file holding one payload (default: stdin)")
    parser.add_argument("--hex", help="the payload as hex digits instead")
    args = parser.parse_args(argv)
    try:
        if args.hex is not None:
            payload = bytes.fromhex("".join(args.hex.split()))
        elif args.file is not None:
            payload = args.file.read_bytes()
        else:
            payload = sys.stdin.buffer.read()
        header = read_header(payload)
        form = decode_payload(payload)
    except (CodecError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"# version {header.version}, {header.mode}, compression {header.compression}, {header.kind}", file=sys.stderr
    )
    print(json.dumps(form))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

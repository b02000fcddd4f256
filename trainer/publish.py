"""``python -m trainer.publish FOLDER URI``: copy a local folder to a store URI (``s3://bucket/prefix`` or a folder).

The last step of the chart's eval Job and of compose's ``eval`` profile: ``mfpo eval report``
writes its report folder locally, and this puts it in the object store next to the run.
Same relative keys; a ``mfpo_merge.json`` manifest, if any, goes last (:func:`trainer.merge.publish_folder`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.merge import publish_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.publish", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="Local folder to copy (e.g. the eval report).")
    parser.add_argument("uri", help="Destination: s3://bucket/prefix (MFPO_S3_* settings) or a folder.")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    publish_folder(args.folder, args.uri)
    print(f"published {args.folder} to {args.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`diffill corpus`: training text from the Python source that installed packages ship.

Only packages whose license is on an explicit permissive allowlist are read; files are
deduplicated by content, anything mentioning HumanEval is dropped (it is our evaluation
set), and the split into train/validation is by file (a hash of the content), so no file
is in both.  The manifest records package, version, license, files, bytes and sha256.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata as md
import json
import re
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

# Permissive licenses we may train on and ship a model of; copyleft (GPL, LGPL, MPL, EPL) is left out.
ALLOWED = {
    "mit": "MIT", "bsd": "BSD", "apache": "Apache-2.0", "psf": "PSF", "python software foundation": "PSF",
    "isc": "ISC", "zlib": "Zlib", "unlicense": "Unlicense", "0bsd": "0BSD", "hpnd": "HPND",
}
COPYLEFT = re.compile(r"\b(l?gpl|agpl|mpl|epl|cddl|gnu|mozilla|eclipse|copyleft)\b", re.I)
MAX_FILE_BYTES = 400_000  # bigger files are generated tables, not code people write
VALID_FRACTION = 0.02


def classify_license(meta: md.PackageMetadata) -> str | None:
    """The package's license if it is on the allowlist, else None."""
    texts = [meta.get("License-Expression") or "", (meta.get("License") or "")[:200]]
    texts += [c for c in (meta.get_all("Classifier") or []) if c.startswith("License ::")]
    blob = " ".join(texts).lower()
    if not blob.strip() or COPYLEFT.search(blob):
        return None
    for key, name in ALLOWED.items():
        if re.search(rf"\b{re.escape(key)}\b", blob):
            return name
    return None


@dataclass
class PackageEntry:
    package: str
    version: str
    license: str
    files: int = 0
    bytes: int = 0
    sha256: list[str] = field(default_factory=list)


def _package_sources(sites: list[Path] = ()) -> Iterator[tuple[str, str, str, list[Path]]]:
    """(name, version, license, .py files) for the stdlib and every allowlisted distribution installed
    here or in `sites` (folders such as `pip install --target DIR` makes: packages installed only to
    be read, never imported).  A distribution found twice is read once, from the first place."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo"}
    files = [p for p in stdlib.rglob("*.py") if not skip & set(p.relative_to(stdlib).parts)]
    yield "cpython-stdlib", sys.version.split()[0], "PSF", files
    names: set[str] = set()
    dists = [d for site in sites for d in md.distributions(path=[str(site)])] + list(md.distributions())
    for dist in dists:
        lic = classify_license(dist.metadata)
        key = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if lic is None or not dist.files or key in names:
            continue
        names.add(key)
        py = [Path(dist.locate_file(f)) for f in dist.files if str(f).endswith(".py")]
        py = [p for p in py if "tests" not in p.parts and "test" not in p.parts]
        yield dist.metadata["Name"], dist.version, lic, py


def build_corpus(out: Path, max_bytes: int | None = None, sites: list[Path] = ()) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    packages: list[PackageEntry] = []
    skipped = {"duplicate": 0, "humaneval": 0, "too_big": 0, "not_utf8": 0}
    total = 0
    with gzip.open(out / "train.jsonl.gz", "wt") as train, gzip.open(out / "valid.jsonl.gz", "wt") as valid:
        for name, version, lic, files in _package_sources(sites):
            entry = PackageEntry(name, version, lic)
            for path in sorted(files):
                try:
                    raw = path.read_bytes()
                except OSError:
                    continue
                if len(raw) > MAX_FILE_BYTES:
                    skipped["too_big"] += 1
                    continue
                digest = hashlib.sha256(raw).hexdigest()
                if digest in seen:
                    skipped["duplicate"] += 1
                    continue
                seen.add(digest)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    skipped["not_utf8"] += 1
                    continue
                if "humaneval" in text.lower():
                    skipped["humaneval"] += 1
                    continue
                if not text.strip():
                    continue
                is_valid = int(digest[:8], 16) / 0xFFFFFFFF < VALID_FRACTION
                (valid if is_valid else train).write(json.dumps({"package": name, "text": text}) + "\n")
                entry.files += 1
                entry.bytes += len(raw)
                entry.sha256.append(digest)
                total += len(raw)
                if max_bytes is not None and total >= max_bytes:
                    break
            if entry.files:
                packages.append(entry)
            if max_bytes is not None and total >= max_bytes:
                break
    manifest = {
        "packages": [vars(p) for p in packages],
        "files": sum(p.files for p in packages),
        "bytes": total,
        "skipped": skipped,
        "valid_fraction": VALID_FRACTION,
        "licenses": sorted({p.license for p in packages}),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _site_dirs(folder: Path) -> list[Path]:
    """`folder` itself if it holds *.dist-info, else its subfolders that do (one per package)."""
    if any(folder.glob("*.dist-info")):
        return [folder]
    return sorted(d for d in folder.iterdir() if d.is_dir() and any(d.glob("*.dist-info")))


def read_texts(path: Path) -> Iterator[str]:
    with gzip.open(path, "rt") as f:
        for line in f:
            yield json.loads(line)["text"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill corpus", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/corpus"))
    ap.add_argument("--max-mb", type=float, default=None, help="stop after this many MB of source")
    ap.add_argument("--site", type=Path, action="append", default=[],
                    help="also read packages installed in this folder (repeatable; e.g. made with "
                         "`pip install --no-deps --target DIR PKG` in a throwaway place)")
    args = ap.parse_args(argv)
    sites = [d for s in args.site for d in _site_dirs(s)]
    max_bytes = int(args.max_mb * 1e6) if args.max_mb else None
    m = build_corpus(args.out, max_bytes, sites)
    print(f"{m['files']} files, {m['bytes'] / 1e6:.1f} MB from {len(m['packages'])} packages "
          f"({', '.join(m['licenses'])}); skipped {m['skipped']}; written to {args.out}")
    return 0

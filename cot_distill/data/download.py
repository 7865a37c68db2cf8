"""Fetches a benchmark's original files into a data directory.

Every file comes from raw.githubusercontent.com at a pinned commit (see
`cot_distill.data.sources`) and must match its recorded SHA-256, so what a
user downloads is exactly what the counts and tests were checked against.
Downloads stream to `<file>.part` and are renamed into place only after the
hash matches, so an interrupted run never leaves a truncated file; files
already present with the right hash are skipped, so re-running resumes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib

import httpx
import tqdm

from cot_distill.data import registry
from cot_distill.data.sources import DataFile

_CHUNK_BYTES = 1 << 16
_TIMEOUT_SECONDS = 60.0


class ChecksumError(ValueError):
  """A downloaded file's SHA-256 differs from the pinned one."""


def file_sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as handle:
    for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _fetch(client: httpx.Client, data_file: DataFile, target: pathlib.Path,
           show_progress: bool) -> None:
  target.parent.mkdir(parents=True, exist_ok=True)
  partial = target.with_name(target.name + ".part")
  digest = hashlib.sha256()
  try:
    with client.stream("GET", data_file.url) as response:
      response.raise_for_status()
      total = int(response.headers.get("content-length") or 0) or None
      with open(partial, "wb") as handle, tqdm.tqdm(
          total=total, unit="B", unit_scale=True, desc=data_file.relative_path,
          disable=not show_progress, leave=False) as progress:
        for chunk in response.iter_bytes(_CHUNK_BYTES):
          handle.write(chunk)
          digest.update(chunk)
          progress.update(len(chunk))
    if digest.hexdigest() != data_file.sha256:
      raise ChecksumError(
          f"{data_file.url}: SHA-256 {digest.hexdigest()} differs from the pinned "
          f"{data_file.sha256}; not saved to {target}")
    os.replace(partial, target)
  finally:
    if partial.exists():
      partial.unlink()


def download(name: str, data_dir: str | os.PathLike[str] | None = None, *,
             client: httpx.Client | None = None, force: bool = False,
             show_progress: bool = True) -> list[pathlib.Path]:
  """Downloads dataset `name`'s files; returns their local paths.

  Args:
    name: registry name, e.g. "gsm8k".
    data_dir: target directory (default: `registry.resolve_data_dir()`).
    client: an httpx client to use (tests pass one with a mock transport).
    force: re-download even files that are present with the right hash.
    show_progress: tqdm bars per file.
  """
  info = registry.get_info(name)
  root = registry.resolve_data_dir(data_dir)
  own_client = client is None
  if own_client:
    client = httpx.Client(follow_redirects=True, timeout=_TIMEOUT_SECONDS)
  paths = []
  try:
    for data_file in info.files:
      target = root / data_file.relative_path
      if not force and target.is_file() and file_sha256(target) == data_file.sha256:
        logging.info("%s: present, hash matches", target)
      else:
        logging.info("downloading %s -> %s", data_file.url, target)
        _fetch(client, data_file, target, show_progress)
      paths.append(target)
  finally:
    if own_client:
      client.close()
  return paths

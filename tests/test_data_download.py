"""Downloader and data-dir resolution, with a mock HTTP transport (no network).

The mock serves the real shared files at their pinned raw-GitHub URLs, so
the SHA-256 check runs on real bytes.
"""

from __future__ import annotations

import pathlib

import httpx
import pytest

from cot_distill.data import download, registry, sources


def serving(data_dir: pathlib.Path, requests: list[str], corrupt: bool = False) -> httpx.Client:
  by_url = {data_file.url: data_dir / data_file.relative_path
            for files in sources.FILES.values() for data_file in files}

  def handler(request: httpx.Request) -> httpx.Response:
    requests.append(str(request.url))
    path = by_url.get(str(request.url))
    if path is None:
      return httpx.Response(404)
    body = path.read_bytes()
    return httpx.Response(200, content=body[:-1] + b"!" if corrupt else body)

  return httpx.Client(transport=httpx.MockTransport(handler))


def test_pinned_sources_match_the_shared_copies(data_dir):
  for files in sources.FILES.values():
    for data_file in files:
      assert download.file_sha256(data_dir / data_file.relative_path) == data_file.sha256
  (gsm8k_test,) = [f for f in sources.FILES["gsm8k"] if f.relative_path.endswith("test.jsonl")]
  assert gsm8k_test.url == (
      "https://raw.githubusercontent.com/openai/grade-school-math/"
      "3101c7d5072418e28b9008a6636bde82a006892c/grade_school_math/data/test.jsonl")


def test_download_then_load_then_skip(tmp_path, data_dir):
  requests: list[str] = []
  with serving(data_dir, requests) as client:
    paths = download.download("asdiv_a", tmp_path, client=client, show_progress=False)
    assert len(paths) == len(requests) == 6
    assert len(registry.load("asdiv_a", "fold4", tmp_path)) == 266
    download.download("asdiv_a", tmp_path, client=client, show_progress=False)
    assert len(requests) == 6  # present with the right hash: not fetched again


def test_checksum_mismatch_leaves_no_file(tmp_path, data_dir):
  with serving(data_dir, [], corrupt=True) as client:
    with pytest.raises(download.ChecksumError, match="differs from the pinned"):
      download.download("svamp", tmp_path, client=client, show_progress=False)
  assert not list(tmp_path.rglob("*.json*"))


def test_http_error_propagates(tmp_path):
  client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(404)))
  with pytest.raises(httpx.HTTPStatusError):
    download.download("svamp", tmp_path, client=client, show_progress=False)
  assert not (tmp_path / "svamp").exists() or not list((tmp_path / "svamp").iterdir())


def test_data_dir_precedence(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
  assert registry.resolve_data_dir() == tmp_path / "cache" / "cot_distill" / "data"
  monkeypatch.setenv(registry.DATA_DIR_ENV, str(tmp_path / "env"))
  assert registry.resolve_data_dir() == tmp_path / "env"
  assert registry.resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"

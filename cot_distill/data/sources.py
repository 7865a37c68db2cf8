"""Where every benchmark file comes from: repository, commit, path, SHA-256.

Local data directories mirror the layout of `shared/data` (the relative
paths below). Each file is fetched from raw.githubusercontent.com at a fixed
commit and checked against the SHA-256 recorded when the shared copy was
verified (shared/data/SOURCES.md), so a download is byte-identical to the
files the tests and counts were checked on.
"""

from __future__ import annotations

import dataclasses

GSM8K_REPO = ("openai/grade-school-math", "3101c7d5072418e28b9008a6636bde82a006892c")
KOJIMA_REPO = ("kojima-takeshi188/zero_shot_cot", "5ef330fcdeec0cd26aee27943504f91f8ec1c33c")
ASDIV_REPO = ("chaochun/nlu-asdiv-dataset", "883f90a9a65bf00304ba8f37423910fe743abc47")
SVAMP_REPO = ("arkilpatel/SVAMP", "689d7ccac74b9983a2ac7cc3b264f441b99e7c53")
STRATEGYQA_REPO = ("eladsegal/strategyqa", "1ba1e97452e189569357876f2854b01357ffbe37")


@dataclasses.dataclass(frozen=True)
class DataFile:
  """One file of a benchmark: where it lives locally and upstream."""

  relative_path: str  # under the data directory, e.g. "gsm8k/test.jsonl"
  repository: str  # GitHub owner/name
  commit: str
  source_path: str  # path inside the repository at `commit`
  sha256: str

  @property
  def url(self) -> str:
    owner_name = self.repository
    return (f"https://raw.githubusercontent.com/{owner_name}/{self.commit}/"
            f"{self.source_path}")


def _file(relative_path: str, repo: tuple[str, str], source_path: str,
          sha256: str) -> DataFile:
  return DataFile(relative_path, repo[0], repo[1], source_path, sha256)


_ASDIV_FOLD_SHA256 = {
    "asdiv-a": ("1e4e8c670e461e9d59beee13e64e28d7f92e3be8ba6766d3bbeb40818e03e8d6",
                "81bb372c89696d8d0a253d8ac73500208a801c35670112d682c2f2306ef35fd2",
                "56ffc96a9eead77224f782d7c4c84205c21079b3588b08e4a68d2deabf50febc",
                "68733651260332fa6ae89155aa5e15d20a4b11833023712d0a9b2a2d06551e54",
                "103d2091eab4ee825e55353af817af006ddd2fee4948b0ef7fa1df0f6a33723b"),
    "asdiv-w": ("6b00a5307b2236017cde5d39ce9e70862dab956874292492e3fa94482c454707",
                "b6044e25fb77790fa39f9a1bc78af528436de4aeeec2505d8d5721e2f52b1182",
                "c6d7f167b3d8ede05bbff5e3a0f3cd9e420d104b8c18beaa35f13b8258c1e1a8",
                "484cde36443fc4dc06afbf5628bc5d1ec901e55c9f0a6638d846fc620262be56",
                "e5e89a52d9d53ad9cd35587e6c41c6c3d3bf2ef1fdeb01f60c19639f193ca558"),
}
_MAWPS_SHA256 = {  # fold -> (train.csv, dev.csv)
    0: ("0674253e6099813cefbb1d6eae3d2dc784ab6ebfdaf8755f6ebb4b99fc1f6ebe",
        "bad59cff796b01a87363ea970f1fa80c15f56ff5f4388143aadbdc3feaf5f990"),
    1: ("ad8846861202060f2dfcb8423d23218cbf6a4a67010d4d4d939b9df61b2d34b0",
        "31362cb8741f9fc11b470b224478902ae27ab762bdd82bcb08a9c945d5947422"),
    2: ("b137a07367e1b3cd9556fae7b9e17fb5e23836e1e6dc9357719049ebc8860c62",
        "fae4f08a24a23123612ca5bb960e4f9aa7202c856344a59ab7adea424dfc670d"),
    3: ("fb1e286a94feed24a41c5560095e21a33d61888c7c27a355e6ccef725deaf084",
        "5ac76e5559cdde0aa8bcac77eb9af46b9b0230f00661ad0257dbd58a1567a323"),
    4: ("9194364265a42e0f146cc73f514c806c5d322827cd025a474ded33af076837bb",
        "1bb9164e6ba93fdc1bffddd8544c20cddc3c195a299b0b6c6893c2a760c3434b"),
}

_ASDIV_XML = _file("asdiv/ASDiv.xml", ASDIV_REPO, "dataset/ASDiv.xml",
                   "ef8904068482919ac48c8eeaaf6df344b8a308ba66d048c2d4d87eab82dc4929")


def _asdiv_folds(subset: str) -> tuple[DataFile, ...]:
  return tuple(
      _file(f"asdiv/nfolds/{subset}/fold{fold}.txt", ASDIV_REPO,
            f"dataset/nfolds/{subset}/fold{fold}.txt", sha)
      for fold, sha in enumerate(_ASDIV_FOLD_SHA256[subset]))


def _mawps_files() -> tuple[DataFile, ...]:
  files = []
  for fold, (train_sha, dev_sha) in _MAWPS_SHA256.items():
    for part, sha in (("train", train_sha), ("dev", dev_sha)):
      files.append(_file(f"mawps/cv_mawps/fold{fold}/{part}.csv", SVAMP_REPO,
                         f"data/cv_mawps/fold{fold}/{part}.csv", sha))
  return tuple(files)


# Registry name -> the files its loader reads.
FILES: dict[str, tuple[DataFile, ...]] = {
    "gsm8k": (
        _file("gsm8k/train.jsonl", GSM8K_REPO, "grade_school_math/data/train.jsonl",
              "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
        _file("gsm8k/test.jsonl", GSM8K_REPO, "grade_school_math/data/test.jsonl",
              "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
    ),
    "svamp": (_file("svamp/SVAMP.json", KOJIMA_REPO, "dataset/SVAMP/SVAMP.json",
                    "5be77703a6d891ae476d7c082787ad361392aa02453b132516cdd5f4e7934e3e"),),
    "multiarith": (_file("multiarith/MultiArith.json", KOJIMA_REPO,
                         "dataset/MultiArith/MultiArith.json",
                         "dc9db1b6cc68b1ecc2dec830d15aaf8c9a0932aa31d5ffce88ef3628179d36f4"),),
    "addsub": (_file("addsub/AddSub.json", KOJIMA_REPO, "dataset/AddSub/AddSub.json",
                     "21930fa90385c72b5a15f4b9a4dda27276b889ae9ff44285505cdd9fa0a20df8"),),
    "singleeq": (_file("singleeq/questions.json", KOJIMA_REPO,
                       "dataset/SingleEq/questions.json",
                       "051507bd2b489c257057b485774a83d2710c23a4bc0f4a58e1822ae2773ef05e"),),
    "asdiv": (_ASDIV_XML,) + _asdiv_folds("asdiv-w"),
    "asdiv_a": (_ASDIV_XML,) + _asdiv_folds("asdiv-a"),
    "mawps": _mawps_files(),
    "aqua": (_file("aqua/test.json", KOJIMA_REPO, "dataset/AQuA/test.json",
                   "de41581881ef95c5588c44ddc701c77fd480839241dd422a0d181262af24520c"),),
    "strategyqa": (
        _file("strategyqa/train.json", STRATEGYQA_REPO, "data/strategyqa/train.json",
              "0f72560b8a6fad3db847d2f1a7524fb087297843bb45a8d3245ffd68cbe0de12"),
        _file("strategyqa/dev.json", STRATEGYQA_REPO, "data/strategyqa/dev.json",
              "0d94842ffb022db8fd5ecd2168b785d5cf67f6faf64f665476bad544a3eb9dde"),
    ),
    "strategyqa_bigbench": (
        _file("strategyqa_bigbench/task.json", KOJIMA_REPO, "dataset/StrategyQA/task.json",
              "60af9081fed20102fd8bb1e02dc7d9f12238efcba33e4c1a56b4d61cb6409803"),),
    "commonsenseqa": (
        _file("commonsenseqa/train_rand_split.jsonl", KOJIMA_REPO,
              "dataset/CommonsenseQA/train_rand_split.jsonl",
              "58ffa3c8472410e24b8c43f423d89c8a003d8284698a6ed7874355dedd09a2fb"),
        _file("commonsenseqa/dev_rand_split.jsonl", KOJIMA_REPO,
              "dataset/CommonsenseQA/dev_rand_split.jsonl",
              "3210497fdaae614ac085d9eb873dd7f4d49b6f965a93adadc803e1229fd8a02a"),
    ),
    "coin_flip": (_file("coin_flip/coin_flip.json", KOJIMA_REPO,
                        "dataset/coin_flip/coin_flip.json",
                        "68cf201737a1463ef6bed5419622805a8934d92bff6a28a9dfbf83be3135ba5a"),),
    "last_letters": (_file("last_letters/last_letters.json", KOJIMA_REPO,
                           "dataset/last_letters/last_letters.json",
                           "60e8d092d0a6423d3256e87e0c249b69aefea4cd27985082095fa4e93931fb02"),),
    "date_understanding": (
        _file("bigbench_date/task.json", KOJIMA_REPO, "dataset/Bigbench_Date/task.json",
              "ff716f0e399109146db3a998281c39954907b78268a9b633a95582d63847822f"),),
    "tracking_shuffled_objects": (
        _file("bigbench_object_tracking/task.json", KOJIMA_REPO,
              "dataset/Bigbench_object_tracking/task.json",
              "74b74d3c8827c0387a3f24ee9efa7edd90b2d53af3daacb9961341af66f750a0"),),
}

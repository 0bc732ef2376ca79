"""benchmarks/install_missing_wheels.py (the GPU host's diffusers wheels): a wheel goes in only when
none of its top-level modules imports already, read from its RECORD; what a previous call put in the
target does not count as the host's."""
import zipfile

import pytest

from benchmarks.install_missing_wheels import split_by_host, top_level_modules


def _wheel(path, name, files):
    record = "".join(f"{f},sha256=x,1\n" for f in files) + f"{name}-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for f in files:
            z.writestr(f, "")
        z.writestr(f"{name}-1.0.dist-info/RECORD", record)
    return path


def test_top_level_modules_from_record(tmp_path):
    w = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", "pkg",
               ["pkg/__init__.py", "pkg/sub/x.py", "single.py", "_ext.cpython-312-x86_64-linux-gnu.so",
                "pkg-1.0.data/scripts/tool", "distutils-precedence.pth"])
    assert top_level_modules(w) == {"pkg", "single", "_ext"}


def test_only_the_missing_wheels_are_selected(tmp_path, monkeypatch):
    have = _wheel(tmp_path / "json-1.0-py3-none-any.whl", "json", ["json/__init__.py"])   # the stdlib's
    lack = _wheel(tmp_path / "nosuchmod_mz-1.0-py3-none-any.whl", "nosuchmod_mz", ["nosuchmod_mz/__init__.py"])
    target = tmp_path / "site"
    (target / "nosuchmod_mz").mkdir(parents=True)
    (target / "nosuchmod_mz" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(target))          # as PYTHONPATH=/tmp/site:... on the host
    missing, present = split_by_host([have, lack], str(target))
    assert missing == [lack] and present == [have]


def test_a_wheel_without_modules_is_an_error(tmp_path):
    empty = _wheel(tmp_path / "empty-1.0-py3-none-any.whl", "empty", [])
    with pytest.raises(SystemExit, match="no importable top-level module"):
        split_by_host([empty], str(tmp_path / "site"))

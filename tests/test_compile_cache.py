"""jaxdl.compile_cache: the scripts' persistent compilation cache.

`enable()` changes process-wide JAX settings, so the cases that turn it on run in a
subprocess; the cases that leave it off run here and must not touch JAX's config.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jaxdl import compile_cache

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def untouched_config():
    before = jax.config.jax_compilation_cache_dir
    yield
    assert jax.config.jax_compilation_cache_dir == before


@pytest.mark.parametrize("value", ["off", "0", "OFF", "no"])
def test_off_leaves_jax_alone(monkeypatch, untouched_config, value):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv(compile_cache.ENV, value)
    assert compile_cache.enable() is None


def test_jax_own_setting_wins(monkeypatch, untouched_config, tmp_path):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax-own"))
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "ours"))
    assert compile_cache.enable() == tmp_path / "jax-own"
    assert not (tmp_path / "ours").exists()


def test_unusable_directory_warns_and_stays_off(monkeypatch, untouched_config, tmp_path, capsys):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(compile_cache.ENV, str(blocker / "cache"))
    assert compile_cache.enable() is None
    err = capsys.readouterr().err
    assert err.startswith("jaxdl: compilation cache off") and len(err.strip().splitlines()) == 1


def test_default_dir_is_per_host_and_version(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    tag = compile_cache.host_tag()
    assert len(tag) == 12 and int(tag, 16) >= 0
    assert tag == compile_cache.host_tag()
    assert compile_cache.default_dir() == tmp_path / "jaxdl" / f"xla-{tag}"


def _train(out: Path, cache: Path) -> dict:
    env = {**os.environ, compile_cache.ENV: str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    cmd = [sys.executable, str(REPO / "scripts" / "train_flax.py"), "--model", "mlp"]
    cmd += ["--runs", "1", "--epochs", "2", "--nb", "100", "--source", "bundled"]
    cmd += ["--out", str(out)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=REPO, timeout=300)
    return json.loads((out / "results.json").read_text())


def test_script_fills_the_cache_and_a_cached_run_gives_the_same_numbers(tmp_path):
    cache = tmp_path / "cache"
    first = _train(tmp_path / "first", cache)
    entries = {p.name for p in cache.iterdir()}
    assert entries, "the first run wrote no compiled program"
    second = _train(tmp_path / "second", cache)
    assert {p.name for p in cache.iterdir()} == entries  # nothing compiled anew
    run_a, run_b = first["runs"][0], second["runs"][0]
    for key in ("train_error", "test_error", "train_loss", "test_loss"):
        assert run_a[key] == run_b[key]
